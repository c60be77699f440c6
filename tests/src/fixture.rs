//! Fixture programs: built from tests/fixtures on first use, started and owned by a test, and
//! killed when the test drops them.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{mpsc, Mutex},
    time::Duration,
};

static BUILD_LOCK: Mutex<()> = Mutex::new(());

/// Held while a fixture is built: across threads (`BUILD_LOCK`) and across test processes run
/// at once (an exclusive `flock` on `target/fixtures/.build-lock`, released when dropped).
struct BuildLock {
    _file: std::fs::File,
    _thread: std::sync::MutexGuard<'static, ()>,
}

impl BuildLock {
    fn take(out_dir: &std::path::Path) -> Self {
        let thread = BUILD_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let file = std::fs::File::create(out_dir.join(".build-lock")).expect("the fixtures' lock file");
        // SAFETY: flock on a descriptor this struct owns; it is released when the file closes.
        let taken = unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&file), libc::LOCK_EX) };
        assert_eq!(taken, 0, "cannot lock target/fixtures: {}", std::io::Error::last_os_error());
        Self { _file: file, _thread: thread }
    }
}

/// The GOROOT of the newest Go in Debian unstable, which `cargo xtask setup` unpacks into
/// target/go-toolchains (xtask/src/newer_go.rs), and its version; None if it is not there.
pub fn newer_go() -> Option<(PathBuf, String)> {
    go_toolchain("newest")
}

/// A Go toolchain `cargo xtask setup` unpacks into target/go-toolchains: `newest` (Debian
/// unstable's) or `middle` (Debian 13's), and its version.
pub fn go_toolchain(name: &str) -> Option<(PathBuf, String)> {
    let goroot = super::workspace().join("target/go-toolchains").join(name);
    let version = std::fs::read_to_string(goroot.join("VERSION")).ok()?;
    goroot.join("bin/go").exists().then(|| (goroot, version.lines().next().unwrap_or_default().to_string()))
}

/// A copy of `binary` that is this test's own (in `target/test-scratch/own-bin/TEST`), for a
/// test that selects its processes by executable: a test beside it may run the same program.
pub fn own_copy(binary: &Path, test: &str) -> PathBuf {
    let dir = super::workspace().join("target/test-scratch/own-bin").join(test);
    std::fs::create_dir_all(&dir).expect("create the own-bin dir");
    let name = binary.file_name().expect("a binary's name");
    let (copy, part) = (dir.join(name), dir.join(format!(".{}.part", name.to_string_lossy())));
    std::fs::copy(binary, &part).unwrap_or_else(|e| panic!("copy {}: {e}", binary.display()));
    std::fs::rename(&part, &copy).expect("rename the copy into place");
    copy
}

/// Builds fixture `name` (`name.c` with gcc, `name.rs` with rustc, or `name.go` with go) unless
/// it is up to date. C fixtures keep frame pointers so that stacks walk through them, except
/// `*_nofp`, built `-O2 -fomit-frame-pointer`; Rust fixtures are release builds. `NAME-stripped` is the Go
/// fixture NAME built with `-ldflags=-s -w` (no symbol table, no DWARF), or the C fixture NAME
/// with `strip --strip-all`, its debug information kept beside it in `NAME-stripped.debug`
/// (see [`debug_file`]); `NAME-newest-go` is NAME built with `newer_go()` instead of Debian
/// 12's Go, `NAME-middle-go` with Debian 13's. They combine: `goleak-stripped-newest-go`.
pub fn fixture_bin(name: &str) -> PathBuf {
    let src_dir = super::workspace().join("tests/fixtures");
    let out_dir = super::workspace().join("target/fixtures");
    std::fs::create_dir_all(&out_dir).expect("create target/fixtures");
    let _lock = BuildLock::take(&out_dir);
    let bin = out_dir.join(name);
    let stripped = name.contains("-stripped");
    let toolchain = ["newest", "middle"].into_iter().find(|t| name.contains(&format!("-{t}-go")));
    let base = name.replace("-stripped", "").replace("-newest-go", "").replace("-middle-go", "");
    // The kernel-matrix guest holds the binaries but no source: a binary without a source is used
    // as it is.
    let candidates = ["c", "rs", "go"].map(|ext| src_dir.join(format!("{base}.{ext}")));
    let source = candidates.iter().find(|p| p.exists()).unwrap_or(&candidates[2]).clone();
    let newer = |p: &PathBuf| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    if bin.exists() && newer(&bin) >= newer(&source) && newer(&bin) >= newer(&src_dir.join("raw_syscall.h")) {
        return bin;
    }
    let is_c = source.extension().is_some_and(|e| e == "c");
    let is_rust = source.extension().is_some_and(|e| e == "rs");
    // A stripped C fixture is built whole first; its debug part and its stripped part come from it.
    let compiled = if is_c && stripped { out_dir.join(format!("{name}.full")) } else { bin.clone() };
    let mut cmd = if is_c {
        // `_nofp` fixtures are built as distributions build C: optimised, no frame pointers.
        let codegen = match base.ends_with("_nofp") {
            true => ["-O2", "-fomit-frame-pointer"],
            false => ["-O1", "-fno-omit-frame-pointer"],
        };
        let mut cmd = Command::new("gcc");
        cmd.args(codegen).args(["-g", "-Wall", "-Werror", "-pthread", "-o"]).arg(&compiled).arg(&source);
        cmd
    } else if is_rust {
        // A release build, as `cargo build --release` makes one: no frame pointers.
        let mut cmd = Command::new("rustc");
        cmd.args(["-C", "opt-level=3", "--edition", "2021", "-o"]).arg(&compiled).arg(&source);
        cmd
    } else {
        let mut cmd = if let Some(toolchain) = toolchain {
            let (goroot, _) = go_toolchain(toolchain).expect("the newer Go is unpacked (run `cargo xtask setup`)");
            let mut cmd = Command::new(goroot.join("bin/go"));
            cmd.env("GOROOT", &goroot);
            cmd
        } else {
            Command::new("go")
        };
        cmd.arg("build").arg("-o").arg(&bin);
        if stripped {
            cmd.arg("-ldflags=-s -w");
        }
        cmd.arg(&source);
        // Go's own build cache (shared by every checkout: its keys hold the toolchain), one in
        // target/ when there is no home; never fetch another toolchain.
        if std::env::var_os("HOME").is_none() {
            let cache = toolchain.map_or("gocache".to_string(), |t| format!("gocache-{t}"));
            cmd.env("GOCACHE", out_dir.join(cache));
        }
        cmd.env("GO111MODULE", "off").env("GOTOOLCHAIN", "local");
        cmd
    };
    let out =
        cmd.output().unwrap_or_else(|e| panic!("cannot run the compiler for {name}: {e} (run `cargo xtask setup`)"));
    assert!(out.status.success(), "building fixture {name} failed: {}", String::from_utf8_lossy(&out.stderr));
    if is_c && stripped {
        let debug = out_dir.join(format!("{name}.debug"));
        for (tool, args) in [("objcopy", vec!["--only-keep-debug"]), ("strip", vec!["--strip-all"])] {
            let output = if tool == "objcopy" {
                vec![compiled.clone(), debug.clone()]
            } else {
                vec!["-o".into(), bin.clone(), compiled.clone()]
            };
            let status = Command::new(tool).args(args).args(output).status().expect("binutils");
            assert!(status.success(), "{tool} failed on {name}");
        }
    }
    bin
}

/// The separate debug file of a stripped C fixture, and its build-id (hex).
pub fn debug_file(name: &str) -> (PathBuf, String) {
    let bin = fixture_bin(name);
    let notes = Command::new("readelf").arg("-n").arg(&bin).output().expect("readelf");
    let notes = String::from_utf8_lossy(&notes.stdout);
    let id = notes.lines().find_map(|l| l.trim().strip_prefix("Build ID: ")).expect("a build-id").to_string();
    (bin.with_file_name(format!("{name}.debug")), id)
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
        let mut command = Command::new(fixture_bin(name));
        command.args(args);
        Self::spawn(command, name)
    }

    /// Starts the fixture at `binary` (an [`own_copy`], say) and waits until it prints `ready`.
    pub fn start_at(binary: &Path, args: &[&str]) -> Self {
        let mut command = Command::new(binary);
        command.args(args);
        Self::spawn(command, &binary.display().to_string())
    }

    /// Starts `command` (a fixture run by an interpreter, say) and waits until it prints `ready`.
    pub fn spawn(mut command: Command, name: &str) -> Self {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start fixture {name}: {e}"));
        let lines = super::line_channel(child.stdout.take().expect("piped"));
        let pid = child.id();
        let fixture = Self { child, pid, lines };
        // A JVM under QEMU's emulation takes its time to start.
        let first = fixture.next_line(Duration::from_secs(if super::in_vm() { 60 } else { 10 }));
        assert_eq!(first.as_deref(), Some("ready"), "fixture {name} did not start");
        fixture
    }

    /// Writes `line` to the fixture's standard input (fixtures that take commands).
    pub fn send(&mut self, line: &str) {
        use std::io::Write;
        let stdin = self.child.stdin.as_mut().expect("piped");
        writeln!(stdin, "{line}").and_then(|_| stdin.flush()).expect("write to the fixture");
    }

    /// The next line the fixture prints, if one comes within `timeout`.
    pub fn next_line(&self, timeout: Duration) -> Option<String> {
        self.lines.recv_timeout(timeout).ok()
    }

    /// Kills the fixture now (it is reaped, so its pid is gone from /proc).
    /// Asks it to stop (SIGTERM), as a service manager would, and waits until it has.
    pub fn terminate(&mut self) {
        // SAFETY: kill with our own child's pid.
        unsafe { libc::kill(self.pid as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }

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
