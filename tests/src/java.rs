//! The Java fixture (`tests/fixtures/jit/Chain.java`) and how the Java tests start JVMs.

use std::process::Command;

use crate::{scratch_dir, workspace, Fixture};

/// The Java fixture's classes, compiled once per test process (readable by any user).
pub fn java_classes() -> &'static std::path::Path {
    static COMPILED: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    COMPILED.get_or_init(|| {
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
    start_java_of("java", flags)
}

/// Starts the Java fixture with `flags` on the JVM `java` (its classes, compiled by Debian's
/// JDK 17, run on later JDKs too).
pub fn start_java_of(java: &str, flags: &[&str]) -> Fixture {
    let mut command = Command::new(java);
    command.args(flags).arg("-cp").arg(java_classes()).arg("Chain");
    spawn_jvm(command, "Chain.java")
}

/// The JDK 25 this machine kind has beside Debian's 17 (Temurin's build, in its image).
pub const JDK_25: &str = "/usr/lib/jvm/temurin-25-jdk-amd64";

/// Starts a JVM as a service manager would: with SIGQUIT at its default, so that the JVM
/// catches it (a shell's background job ignores it, and a JVM that inherits that can never be
/// attached to: the agent then says so and does not signal it).
pub fn spawn_jvm(mut command: Command, name: &str) -> Fixture {
    use std::os::unix::process::CommandExt;
    if command.get_current_dir().is_none() {
        command.current_dir(scratch_dir(&format!("jit-java-{}", std::process::id())));
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
