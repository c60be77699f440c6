//! Asking a HotSpot JVM (JDK 17 and later) for its perf map through the attach mechanism, as
//! `jcmd PID Compiler.perfmap` does, so that a JVM started without any flag gets named frames.
//!
//! The protocol (HotSpot's `attachListener_linux.cpp`): the JVM listens on
//! `/tmp/.java_pidNSPID` once it has seen SIGQUIT with an `.attach_pidNSPID` file in its working
//! directory (or its `/tmp`); a client writes `1\0jcmd\0Compiler.perfmap\0\0\0` and reads a
//! status line, then the command's output. The JVM writes `/tmp/perf-NSPID.map` itself, in its
//! own mount namespace. As `jattach` does, the request runs as the JVM's uid and gid and in its
//! mount namespace, on a thread of its own that no other work uses: the JVM then sees its own uid
//! at the socket and owns the trigger file, and its `/tmp` is the one the request uses, in a
//! container too.
//!
//! SIGQUIT is sent only to a JVM that catches it (a JVM run with `-Xrs` would dump core), and
//! never to one started with `-XX:+DisableAttachMechanism`.

use std::{
    io::{Read, Write},
    os::unix::{fs::OpenOptionsExt, net::UnixStream},
    path::Path,
    thread::JoinHandle,
    time::{Duration, Instant},
};

/// How long the JVM may take to open its attach socket after SIGQUIT, and to answer.
const ATTACH_TIMEOUT: Duration = Duration::from_secs(5);
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);
/// The answer read at most (the command prints one line).
const MAX_ANSWER: u64 = 64 * 1024;
/// A request started this recently is not repeated just before a bundle is written.
const FRESH_REQUEST: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    #[error("the JVM was started with -XX:+DisableAttachMechanism: it cannot be asked for a perf map")]
    Disabled,
    #[error("the JVM does not catch SIGQUIT (started with -Xrs?): it is not signalled, and not asked for a perf map")]
    NoSigquitHandler,
    #[error("the JVM did not open its attach socket within {0:?}")]
    NoSocket(Duration),
    #[error("the JVM refused Compiler.perfmap: {0}")]
    Refused(String),
    #[error("enter the JVM's mount namespace and uid: {0}")]
    Enter(std::io::Error),
    #[error("attach to the JVM: {0}")]
    Io(#[from] std::io::Error),
}

/// What the JVM's command line and environment say.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct JvmFlags {
    pub attach_disabled: bool,
    pub preserve_frame_pointer: bool,
}

impl JvmFlags {
    /// Flags of the JVM `pid`: its arguments, then `JAVA_TOOL_OPTIONS` and `JDK_JAVA_OPTIONS`.
    pub fn of(pid: u32) -> Self {
        let mut words = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
        for var in environ.split(|&b| b == 0) {
            for name in [&b"JAVA_TOOL_OPTIONS="[..], b"JDK_JAVA_OPTIONS="] {
                if let Some(value) = var.strip_prefix(name) {
                    words.push(0);
                    words.extend(value.iter().map(|&b| if b == b' ' { 0 } else { b }));
                }
            }
        }
        Self::parse(&words)
    }

    /// From NUL-separated words; the last of `+X`/`-X` wins, as in the JVM.
    pub fn parse(words: &[u8]) -> Self {
        let mut flags = Self::default();
        for word in words.split(|&b| b == 0) {
            match word {
                b"-XX:+DisableAttachMechanism" => flags.attach_disabled = true,
                b"-XX:-DisableAttachMechanism" => flags.attach_disabled = false,
                b"-XX:+PreserveFramePointer" => flags.preserve_frame_pointer = true,
                b"-XX:-PreserveFramePointer" => flags.preserve_frame_pointer = false,
                _ => {}
            }
        }
        flags
    }
}

/// Asks JVM `pid` (`ns_pid` in its namespace, running as `uid`:`gid`) to write its perf map.
/// The calling thread enters the JVM's mount namespace and credentials for good: call it on a
/// thread that ends with it.
fn request_perf_map(pid: u32, ns_pid: u32, uid: u32, gid: u32) -> Result<(), AttachError> {
    let socket_name = format!("tmp/.java_pid{ns_pid}");
    let listening = is_socket(&Path::new(&format!("/proc/{pid}/root")).join(&socket_name));
    if !listening && !catches_sigquit(pid) {
        return Err(AttachError::NoSigquitHandler);
    }
    // Opened before entering: the namespace's own /proc may not show the agent's pids.
    let cwd = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_DIRECTORY)
        .open(format!("/proc/{pid}/cwd"))
        .ok();
    enter_jvm(pid, uid, gid).map_err(AttachError::Enter)?;
    let socket = Path::new("/").join(&socket_name);
    if !is_socket(&socket) {
        let trigger = create_trigger(cwd.as_ref(), ns_pid)?;
        // SAFETY: a plain syscall on a pid; the JVM catches SIGQUIT (checked above).
        unsafe { libc::kill(pid as i32, libc::SIGQUIT) };
        let started = Instant::now();
        while !is_socket(&socket) && started.elapsed() < ATTACH_TIMEOUT {
            std::thread::sleep(Duration::from_millis(50));
        }
        trigger.remove();
        if !is_socket(&socket) {
            return Err(AttachError::NoSocket(ATTACH_TIMEOUT));
        }
    }
    let mut stream = UnixStream::connect(&socket)?;
    stream.set_read_timeout(Some(ANSWER_TIMEOUT))?;
    stream.set_write_timeout(Some(ANSWER_TIMEOUT))?;
    stream.write_all(b"1\0jcmd\0Compiler.perfmap\0\0\0")?;
    let mut answer = String::new();
    stream.take(MAX_ANSWER).read_to_string(&mut answer)?;
    let (status, rest) = answer.split_once('\n').unwrap_or((&answer, ""));
    match status.trim() {
        "0" if !rest.contains("Exception") => Ok(()),
        _ => Err(AttachError::Refused(answer.lines().take(2).collect::<Vec<_>>().join(" ").trim().to_string())),
    }
}

/// Moves the calling thread, and only it, into the mount namespace of `pid` and to `uid`:`gid`
/// with no supplementary groups. The raw system calls change one thread's credentials (glibc's
/// wrappers would change every thread of the agent); the thread first stops sharing its root and
/// working directory, which `setns` requires.
fn enter_jvm(pid: u32, uid: u32, gid: u32) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let ns = std::fs::File::open(format!("/proc/{pid}/ns/mnt"))?;
    let check = |rc: libc::c_long| if rc < 0 { Err(std::io::Error::last_os_error()) } else { Ok(()) };
    // SAFETY: system calls on plain integers and a file descriptor this function owns; they
    // change only the calling thread's state.
    unsafe {
        check(libc::unshare(libc::CLONE_FS).into())?;
        check(libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNS).into())?;
        check(libc::syscall(libc::SYS_setgroups, 0, std::ptr::null::<libc::gid_t>()))?;
        check(libc::syscall(libc::SYS_setresgid, gid, gid, gid))?;
        check(libc::syscall(libc::SYS_setresuid, uid, uid, uid))
    }
}

fn is_socket(path: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket())
}

/// Whether `pid` catches SIGQUIT (bit 3 of `SigCgt` in its status).
fn catches_sigquit(pid: u32) -> bool {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let caught = status.lines().find_map(|l| l.strip_prefix("SigCgt:")).map(str::trim);
    caught.and_then(|hex| u64::from_str_radix(hex, 16).ok()).is_some_and(|mask| mask & (1 << (libc::SIGQUIT - 1)) != 0)
}

/// The `.attach_pidNSPID` file, removed once the JVM has looked for it.
struct Trigger<'a> {
    dir: Option<&'a std::fs::File>,
    name: std::ffi::CString,
}

impl Trigger<'_> {
    fn remove(self) {
        use std::os::fd::AsRawFd;
        let dir = self.dir.map_or(libc::AT_FDCWD, |d| d.as_raw_fd());
        // SAFETY: a NUL-terminated name relative to a directory this thread holds open.
        unsafe { libc::unlinkat(dir, self.name.as_ptr(), 0) };
    }
}

/// Creates `.attach_pidNSPID` in the JVM's working directory, else its `/tmp`, as the JVM's
/// uid (the thread runs as it): never through a symbolic link, never over an existing file.
fn create_trigger(cwd: Option<&std::fs::File>, ns_pid: u32) -> Result<Trigger<'_>, AttachError> {
    use std::os::fd::AsRawFd;
    let mut last = None;
    let in_cwd = cwd.map(|dir| (Some(dir), format!(".attach_pid{ns_pid}")));
    for (dir, name) in in_cwd.into_iter().chain([(None, format!("/tmp/.attach_pid{ns_pid}"))]) {
        let name = std::ffi::CString::new(name).expect("no NUL in a formatted number");
        let at = dir.map_or(libc::AT_FDCWD, |d| d.as_raw_fd());
        let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC;
        // SAFETY: a NUL-terminated name relative to a directory this thread holds open.
        let fd = unsafe { libc::openat(at, name.as_ptr(), flags, 0o600) };
        if fd >= 0 {
            // SAFETY: the descriptor was just opened and is owned here.
            unsafe { libc::close(fd) };
            return Ok(Trigger { dir, name });
        }
        last = Some(std::io::Error::last_os_error());
    }
    Err(last.map_or_else(|| AttachError::NoSocket(ATTACH_TIMEOUT), AttachError::Io))
}

/// Requests for one JVM, every `every`, each on a thread of its own (an attach may take
/// seconds; the agent's loop never waits for it).
pub struct PerfMapRequests {
    pid: u32,
    ns_pid: u32,
    ids: (u32, u32),
    every: Duration,
    last: Option<Instant>,
    pending: Option<JoinHandle<Result<(), AttachError>>>,
    pub flags: JvmFlags,
    /// The last request's failure, if it failed.
    pub error: Option<String>,
    /// Maps the JVM wrote for us.
    pub written: u64,
}

impl PerfMapRequests {
    pub fn new(pid: u32, ns_pid: u32, ids: (u32, u32), every: Duration) -> Self {
        let flags = JvmFlags::of(pid);
        let error = flags.attach_disabled.then(|| AttachError::Disabled.to_string());
        Self { pid, ns_pid, ids, every, last: None, pending: None, flags, error, written: 0 }
    }

    /// Starts a request when one is due; true when one has finished with a fresh map.
    pub fn poll(&mut self) -> bool {
        if self.flags.attach_disabled {
            return false;
        }
        if self.pending.as_ref().is_some_and(JoinHandle::is_finished) {
            return self.finish();
        }
        if self.pending.is_none() && self.last.is_none_or(|t| t.elapsed() >= self.every) {
            self.start();
        }
        false
    }

    /// Just before a bundle is written: asks now, unless a request started within
    /// `FRESH_REQUEST`, and waits for the answer up to `wait` (a late answer is taken by the next
    /// `poll`). True when a fresh map came.
    pub fn ask_now(&mut self, wait: Duration) -> bool {
        if self.flags.attach_disabled {
            return false;
        }
        if self.pending.is_none() {
            if self.last.is_some_and(|t| t.elapsed() < FRESH_REQUEST) {
                return false;
            }
            self.start();
        }
        let until = Instant::now() + wait;
        while self.pending.as_ref().is_some_and(|h| !h.is_finished()) && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(10));
        }
        self.pending.as_ref().is_some_and(JoinHandle::is_finished) && self.finish()
    }

    fn start(&mut self) {
        self.last = Some(Instant::now());
        let (pid, ns_pid, (uid, gid)) = (self.pid, self.ns_pid, self.ids);
        let spawned = std::thread::Builder::new()
            .name("jvm-attach".into())
            .spawn(move || request_perf_map(pid, ns_pid, uid, gid));
        self.pending = spawned.map_err(|e| tracing::warn!("cannot start a JVM attach: {e}")).ok();
    }

    /// Takes the finished request's result; true when the JVM wrote its map.
    fn finish(&mut self) -> bool {
        let Some(handle) = self.pending.take() else { return false };
        let result = handle.join().unwrap_or_else(|_| Err(AttachError::Refused("the request panicked".into())));
        match result {
            Ok(()) => {
                self.error = None;
                self.written += 1;
                true
            }
            Err(e) => {
                let said = e.to_string();
                if self.error.as_deref() != Some(said.as_str()) {
                    tracing::warn!(pid = self.pid, "{said}");
                    self.error = Some(said);
                }
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_flag_wins() {
        let flags = JvmFlags::parse(b"java\0-XX:+PreserveFramePointer\0-jar\0app.jar");
        assert_eq!(flags, JvmFlags { attach_disabled: false, preserve_frame_pointer: true });
        let flags =
            JvmFlags::parse(b"java\0-XX:+DisableAttachMechanism\0-XX:+PreserveFramePointer\0-XX:-PreserveFramePointer");
        assert_eq!(flags, JvmFlags { attach_disabled: true, preserve_frame_pointer: false });
    }

    #[test]
    fn a_process_that_ignores_sigquit_is_not_signalled() {
        // This test process does not catch SIGQUIT.
        assert!(!catches_sigquit(std::process::id()));
        let dir = std::env::temp_dir();
        let err = request_perf_map(std::process::id(), u32::MAX, 0, 0).unwrap_err();
        assert!(matches!(err, AttachError::NoSigquitHandler), "{err}");
        assert!(!dir.join(format!(".attach_pid{}", u32::MAX)).exists());
    }
}
