//! The Java fixture (`tests/fixtures/jit/Chain.java`) and how the Java tests start JVMs.

use std::process::Command;

use crate::{scratch_dir, workspace, Fixture};

/// The Java fixture's classes, compiled once per test process (readable by any user).
pub fn java_classes() -> &'static std::path::Path {
    static COMPILED: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    COMPILED.get_or_init(|| {
        // Compiled already where there is no compiler (a kernel-matrix guest: a JRE only).
        if let Some(dir) = std::env::var_os("AUTODUMP_JAVA_CLASSES") {
            return dir.into();
        }
        // Each test process its own: another test's compile would wipe the classes under a JVM.
        let dir = scratch_dir(&format!("jit-java-classes-{}", std::process::id()));
        let source = workspace().join("tests/fixtures/jit/Chain.java");
        let status =
            Command::new("javac").arg("-d").arg(&dir).arg(source).status().expect("javac (setup installs a JDK)");
        assert!(status.success(), "javac failed");
        dir
    })
}

/// Starts the Java fixture with `flags`.
pub fn start_java(flags: &[&str]) -> Fixture {
    start_java_of(&Jdk::host(), flags)
}

/// Starts the Java fixture with `flags` on the JDK `jdk` (its classes, compiled by Debian's
/// JDK 17, run on later JDKs too; copied into the JDK's root when it has one).
pub fn start_java_of(jdk: &Jdk, flags: &[&str]) -> Fixture {
    start_chain(jdk, flags, &[])
}

/// Starts the Java fixture on `jdk` with JVM `flags` and its own `args` (`wait`: its main
/// thread sleeps instead of spinning).
pub fn start_chain(jdk: &Jdk, flags: &[&str], args: &[&str]) -> Fixture {
    let mut command = jdk.tool("java");
    command.args(flags).arg("-cp").arg(jdk.classes()).arg("Chain").args(args);
    spawn_jvm(command, "Chain.java")
}

/// Debian 13's JDK 21 and unstable's JDK 25: (the root `cargo xtask setup` installs it in, its
/// home there).
pub const JDK_21: (&str, &str) = ("trixie", "/usr/lib/jvm/java-21-openjdk-amd64");
pub const JDK_25: (&str, &str) = ("sid", "/usr/lib/jvm/java-25-openjdk-amd64");

/// Debian's JDK (`JDK_21`, `JDK_25`) in its release's root: there, or the test fails.
pub fn debian_jdk((suite, home): (&str, &str)) -> Jdk {
    let jdk = Jdk::in_root(crate::roots::root(suite), home);
    assert!(jdk.exists(), "no {home} in {} (cargo xtask setup installs it)", crate::roots::root(suite).display());
    jdk
}

/// A JDK: the host's (`java` on the path), or one in a directory, on the host or in a root
/// filesystem of its own Debian release (run with `chroot`, in a mount namespace of its own).
pub struct Jdk {
    pub home: Option<String>,
    pub root: Option<std::path::PathBuf>,
}

impl Jdk {
    pub fn host() -> Self {
        Self { home: None, root: None }
    }

    pub fn in_root(root: std::path::PathBuf, home: &str) -> Self {
        Self { home: Some(home.into()), root: Some(root) }
    }

    /// Whether it is there.
    pub fn exists(&self) -> bool {
        self.home.as_ref().is_none_or(|h| self.on_host(h).join("bin/java").exists())
    }

    /// A command that runs the JDK's tool `name` (`java`, `jfr`, `jcmd`).
    pub fn tool(&self, name: &str) -> Command {
        let exe = match &self.home {
            Some(home) => format!("{home}/bin/{name}"),
            None => name.to_string(),
        };
        match &self.root {
            // The launcher finds its libraries through /proc/self/exe: /proc is mounted in the
            // root, in a mount namespace of the JVM's own (as a container's), gone with it.
            Some(root) => {
                let mut command = Command::new("unshare");
                command
                    .args(["--mount", "--propagation", "private", "sh", "-c"])
                    .arg(r#"mount -t proc proc "$0/proc" && exec chroot "$0" "$@""#)
                    .arg(root)
                    .arg(exe);
                command
            }
            None => Command::new(exe),
        }
    }

    /// Where a path the JDK sees (absolute) is on the host.
    pub fn on_host(&self, path: &str) -> std::path::PathBuf {
        match &self.root {
            Some(root) => root.join(path.trim_start_matches('/')),
            None => path.into(),
        }
    }

    /// A scratch directory the JDK and the host both see: (as the JDK sees it, on the host).
    pub fn scratch(&self, name: &str) -> (String, std::path::PathBuf) {
        let host = scratch_dir(name);
        let Some(root) = &self.root else { return (host.display().to_string(), host) };
        let inside = format!("/tmp/autodump-{name}-{}", std::process::id());
        let dir = root.join(inside.trim_start_matches('/'));
        std::fs::create_dir_all(&dir).expect("a scratch directory in the root");
        (inside, dir)
    }

    /// The fixture's classes, as the JDK sees them.
    fn classes(&self) -> String {
        if self.root.is_none() {
            return java_classes().display().to_string();
        }
        let (inside, dir) = self.scratch("java-classes");
        for entry in std::fs::read_dir(java_classes()).expect("the compiled classes").flatten() {
            std::fs::copy(entry.path(), dir.join(entry.file_name())).expect("copy a class into the root");
        }
        inside
    }
}

/// Starts a JVM as a service manager would: with SIGQUIT at its default, so that the JVM
/// catches it (a shell's background job ignores it, and a JVM that inherits that can never be
/// attached to: the agent then says so and does not signal it).
pub fn spawn_jvm(mut command: Command, name: &str) -> Fixture {
    use std::os::unix::process::CommandExt;
    if command.get_current_dir().is_none() {
        // One of its own: tests in one process would each empty a shared one under the others.
        static JVMS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = JVMS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        command.current_dir(scratch_dir(&format!("jit-java-{}-{n}", std::process::id())));
    }
    // SAFETY: signal() is async-signal-safe; the closure runs in the child before exec.
    unsafe {
        command.pre_exec(|| {
            libc::signal(libc::SIGQUIT, libc::SIG_DFL);
            Ok(())
        });
    }
    Fixture::spawn(command, name)
}

/// Flags that keep HotSpot from inlining the fixture's methods: a perf map names compiled
/// methods, not what they inlined, so that against `perf` both name every sample's methods.
pub const NO_INLINING: [&str; 2] = ["-XX:CompileCommand=quiet", "-XX:CompileCommand=dontinline,Chain::*"];
