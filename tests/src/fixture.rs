//! Fixture programs: built from tests/fixtures on first use, started and owned by a test, and
//! killed when the test drops them.

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::{mpsc, Mutex},
    time::Duration,
};

static BUILD_LOCK: Mutex<()> = Mutex::new(());

/// Builds fixture `name` (`name.c` with gcc, or `name.go` with go) unless it is up to date.
/// C fixtures keep frame pointers so that stacks walk through them. `NAME-stripped` is the Go
/// fixture NAME built with `-ldflags=-s -w` (no symbol table, no DWARF).
pub fn fixture_bin(name: &str) -> PathBuf {
    let _guard = BUILD_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let src_dir = super::workspace().join("tests/fixtures");
    let out_dir = super::workspace().join("target/fixtures");
    std::fs::create_dir_all(&out_dir).expect("create target/fixtures");
    let bin = out_dir.join(name);
    let (base, stripped) = match name.strip_suffix("-stripped") {
        Some(base) => (base, true),
        None => (name, false),
    };
    let c = src_dir.join(format!("{base}.c"));
    let source = if c.exists() { c } else { src_dir.join(format!("{base}.go")) };
    let newer = |p: &PathBuf| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    if bin.exists() && newer(&bin) >= newer(&source) && newer(&bin) >= newer(&src_dir.join("raw_syscall.h")) {
        return bin;
    }
    let mut cmd = if source.extension().is_some_and(|e| e == "c") {
        let mut cmd = Command::new("gcc");
        cmd.args(["-O1", "-g", "-Wall", "-Werror", "-fno-omit-frame-pointer", "-pthread", "-o"]).arg(&bin).arg(&source);
        cmd
    } else {
        let mut cmd = Command::new("go");
        cmd.arg("build").arg("-o").arg(&bin);
        if stripped {
            cmd.arg("-ldflags=-s -w");
        }
        cmd.arg(&source);
        cmd.env("GOCACHE", out_dir.join("gocache")).env("GO111MODULE", "off");
        cmd
    };
    let out =
        cmd.output().unwrap_or_else(|e| panic!("cannot run the compiler for {name}: {e} (run `cargo xtask setup`)"));
    assert!(out.status.success(), "building fixture {name} failed: {}", String::from_utf8_lossy(&out.stderr));
    bin
}

/// A running fixture process, killed on drop.
pub struct Fixture {
    child: Child,
    pub pid: u32,
    lines: mpsc::Receiver<String>,
}

impl Fixture {
    /// Starts fixture `name` and waits until it prints `ready`.
    pub fn start(name: &str, args: &[&str]) -> Self {
        let mut child = Command::new(fixture_bin(name))
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start fixture {name}: {e}"));
        let lines = super::line_channel(child.stdout.take().expect("piped"));
        let pid = child.id();
        let fixture = Self { child, pid, lines };
        let first = fixture.next_line(Duration::from_secs(10));
        assert_eq!(first.as_deref(), Some("ready"), "fixture {name} did not start");
        fixture
    }

    /// The next line the fixture prints, if one comes within `timeout`.
    pub fn next_line(&self, timeout: Duration) -> Option<String> {
        self.lines.recv_timeout(timeout).ok()
    }

    /// Kills the fixture now (it is reaped, so its pid is gone from /proc).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        self.kill();
    }
}
