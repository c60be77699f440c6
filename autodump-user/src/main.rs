//! `autodump-agent`: parse the command line, run, and turn any failure into one line on stderr
//! and a distinct exit code (see `autodump::error::ExitCode`).

use std::{io::IsTerminal, process::ExitCode};

use autodump::{cli::Cli, error::AgentError};
use clap::Parser;
use tracing_subscriber::EnvFilter;

/// Allocations from this size up are mapped on their own and returned to the kernel when freed.
/// glibc raises its threshold to the largest block freed so far (up to 32 MiB), after which a
/// bundle's large buffers come from the heap and its freed memory stays resident; a fixed
/// threshold keeps the agent's RSS close to what it uses.
const MMAP_THRESHOLD: libc::c_int = 128 << 10;

fn main() -> ExitCode {
    // SAFETY: mallopt only sets an allocator parameter, before any thread starts.
    unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD) };
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if e.use_stderr() => {
            // One line: clap's first paragraph names the flag and the problem; --help has the rest.
            let rendered = e.render().to_string();
            let paragraph: Vec<&str> = rendered.lines().take_while(|l| !l.trim().is_empty()).map(str::trim).collect();
            let message = paragraph.join(" ");
            eprintln!("autodump-agent: error: {} (see --help)", message.trim_start_matches("error: "));
            return ExitCode::from(e.exit_code() as u8);
        }
        Err(e) => {
            // --help and --version.
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
    };
    let filter = EnvFilter::try_new(&cli.log).unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();

    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("autodump-agent: error: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(async move {
        let usage = |m: &str| anyhow::Error::new(AgentError::new(autodump::error::ExitCode::Usage, m.to_string()));
        match cli.duration {
            Some(_) if cli.pid.is_none() => Err(usage("record mode (--duration) records one process: give --pid")),
            Some(duration) => autodump::run::record(cli, duration).await.map(|path| println!("{}", path.display())),
            None => {
                let targets = autodump::config::targets(&cli)?;
                autodump::watch::watch(cli, targets).await
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let code = e.downcast_ref::<AgentError>().map_or(1, |a| a.code as i32);
            let message = format!("{e:#}").replace('\n', " ");
            eprintln!("autodump-agent: error: {message}");
            ExitCode::from(code as u8)
        }
    }
}
