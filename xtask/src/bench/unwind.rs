//! Row 7: the unwind tables the agent loads into the kernel, per target: how many files and rows,
//! the kernel memory they take, how long compiling them took, and the agent's peak RSS.

use std::{fmt::Write as _, path::PathBuf, process::Command, time::Duration};

use anyhow::{Context, Result};

use super::{
    process::{status_mib, Tool, ToolKind},
    Bench,
};
use crate::util::{output, step};

/// Python that imports every extension module of its lib-dynload, then the modules that pull in
/// OpenSSL, SQLite, libffi, ncurses, readline, zlib, bzip2 and liblzma: about 90 files mapped.
const MANY_LIBRARIES: &str = r#"
import glob, importlib, os, time
for p in glob.glob(os.path.dirname(os.__file__) + '/lib-dynload/*.so'):
    try: importlib.import_module(os.path.basename(p).split('.')[0])
    except Exception: pass
import ssl, sqlite3, ctypes, decimal, lzma, bz2, zlib, hashlib, json, curses, readline
print('ready', flush=True)
while True: hashlib.sha256(b'x' * 65536).digest()
"#;
/// Python hashing and encoding JSON: the interpreter and a few libraries.
const PYTHON_WORK: &str = r#"
import hashlib, json
print('ready', flush=True)
while True: json.dumps([hashlib.sha256(str(i).encode()).hexdigest() for i in range(2000)])
"#;

pub fn tables(bench: &Bench) -> Result<String> {
    step("7/9 unwind tables: files, rows, kernel memory, compile time, agent RSS");
    let fixtures = output(crate::util::cargo().args([
        "run",
        "-q",
        "-p",
        "autodump-tests",
        "--bin",
        "build-fixtures",
        "--",
        "spin_nofp",
        "spin_rust",
    ]))
    .context("cannot build the unwinding fixtures")?;
    let fixtures: Vec<PathBuf> = fixtures.lines().map(PathBuf::from).collect();
    let targets: Vec<(&str, Vec<String>)> = vec![
        ("C fixture, -O2 without frame pointers (spin_nofp)", vec![fixtures[0].to_string_lossy().into()]),
        ("Rust release build (spin_rust)", vec![fixtures[1].to_string_lossy().into()]),
        ("Debian's python3.11 hashing and encoding JSON", vec!["python3".into(), "-c".into(), PYTHON_WORK.into()]),
        ("python3.11 with every extension module loaded", vec!["python3".into(), "-c".into(), MANY_LIBRARIES.into()]),
    ];
    let mut md = String::from(
        "## 7. Unwind tables\n\nWhat the agent loads for each target: the files' `.eh_frame` compiled into rows \
         (16 bytes each in a BPF array sized at attach to what the target maps plus 65,536 rows of room, capped by \
         `--unwind-table-rows`), and the mapping tables. Compiling happens once per file (by build id), in the \
         agent, before the probes attach and when new files appear. From each run's `summary.json` \
         (`probes.unwinding.tables`) and the agent's `VmHWM`.\n\n\
         | target | files | rows | CFI compiled | compile time | per MB of CFI | kernel memory | agent peak RSS |\n\
         |---|---|---|---|---|---|---|---|\n",
    );
    for (label, argv) in targets {
        let mut target = Command::new(&argv[0])
            .args(&argv[1..])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot start {}", argv[0]))?;
        let mut first = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(target.stdout.as_mut().unwrap()), &mut first)?;
        let scratch = bench.fresh_scratch()?;
        let mut agent_argv = ToolKind::Autodump.command(&bench.agent, target.id(), &scratch).expect("a tool");
        // Record mode: Ctrl-C writes the bundle whose summary holds the tables' figures.
        agent_argv.extend(["--duration", "60s"].map(String::from));
        let mut agent = Tool::start(ToolKind::Autodump, &agent_argv, &[])?;
        std::thread::sleep(Duration::from_secs(3));
        let peak = status_mib(agent.pid(), "VmHWM:")?;
        agent.stop()?;
        let _ = target.kill();
        let _ = target.wait();
        let bundle = agent.stdout.try_iter().last().context("the agent wrote no bundle")?;
        let summary: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(PathBuf::from(bundle).join("summary.json"))?)?;
        let t = &summary["probes"]["unwinding"]["tables"];
        let num = |key: &str| t[key].as_f64().unwrap_or(0.0);
        let mb = num("cfi_bytes") / 1e6;
        eprintln!("    {label}: {t}");
        let _ = writeln!(
            md,
            "| {label} | {} | {} | {:.2} MB | {:.0} ms | {:.0} ms | {:.1} MiB | {peak:.1} MiB |",
            num("files"),
            num("rows"),
            mb,
            num("build_ms"),
            num("build_ms") / mb.max(1e-6),
            num("kernel_bytes") / (1 << 20) as f64,
        );
    }
    Ok(md + "\n")
}
