//! Small helpers for running commands and printing what is done.

use std::{
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context, Result};

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask lives in the workspace").to_path_buf()
}

pub fn step(what: &str) {
    eprintln!("==> {what}");
}

pub fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(root());
    cmd
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc_geteuid() == 0 }
}

extern "C" {
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
}

/// `program` at idle CPU priority (SCHED_IDLE, nice 19), as are its children: it runs on what
/// CPU the rest leaves.
pub fn idle(program: &str) -> Command {
    let mut cmd = Command::new(program);
    // SAFETY: between fork and exec, only the two system calls, which allocate nothing.
    unsafe {
        cmd.pre_exec(|| {
            let param = libc::sched_param { sched_priority: 0 };
            libc::setpriority(libc::PRIO_PROCESS, 0, 19);
            if libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd
}

/// `program` run as root: directly when we are root, else through `sudo -E`.
pub fn as_root(program: &Path) -> Command {
    let mut cmd = if is_root() {
        Command::new(program)
    } else {
        let mut c = Command::new("sudo");
        c.arg("-E").arg("env").arg(format!("PATH={}", std::env::var("PATH").unwrap_or_default())).arg(program);
        c
    };
    cmd.current_dir(root());
    cmd
}

pub fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd.status().with_context(|| format!("cannot start {cmd:?}"))?;
    if !status.success() {
        bail!("{:?} failed: {status}", cmd.get_program());
    }
    Ok(())
}

/// Replaces this process with `cmd`, so signals and the exit code reach the user unchanged.
pub fn exec(mut cmd: Command) -> Result<()> {
    let err = cmd.exec();
    Err(err).with_context(|| format!("cannot run {:?}", cmd.get_program()))
}

/// Runs `cmd` and returns its stdout, or None if it cannot run or fails.
pub fn output(cmd: &mut Command) -> Option<String> {
    let out = cmd.output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs `work` on each of `items`, `lanes` at a time: a lane takes the next item as soon as it is
/// free, the first item first. The results come in the order they finished.
pub fn in_lanes<T: Send, R: Send>(items: Vec<T>, lanes: usize, work: impl Fn(T) -> R + Sync) -> Vec<R> {
    let queue = std::sync::Mutex::new(items.into_iter().rev().collect::<Vec<_>>());
    let done = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..lanes.max(1) {
            scope.spawn(|| loop {
                // Taken, then the lock let go: held while an item runs, it would run them one at a time.
                let next = queue.lock().unwrap().pop();
                let Some(item) = next else { break };
                let result = work(item);
                done.lock().unwrap().push(result);
            });
        }
    });
    done.into_inner().unwrap()
}
