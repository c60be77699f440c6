//! PID 1 of a kernel-matrix guest (`cargo xtask vmtest`): mounts the kernel's file systems, runs
//! each check of the plan the host packed into the initramfs, prints one result line per check
//! on the serial console, and restarts the machine, which QEMU (`-no-reboot`) turns into its
//! exit. Never returns: PID 1 exiting would panic the kernel.

#[path = "../vmtest/plan.rs"]
#[allow(dead_code, reason = "the host's half of the plan is not used here")]
mod plan;

use std::{
    ffi::CString,
    io::Read,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use plan::{Check, Outcome, Plan, BTF_DIR, GUEST_MOUNTS, MARK, PLAN_PATH};

fn main() {
    for (source, target, fstype) in GUEST_MOUNTS {
        if let Err(e) = mount(source, target, fstype) {
            println!("{MARK} log cannot mount {target}: {e}");
        }
    }
    // Scratch space on the initramfs's own (writable) file system, for every user as on a host.
    for dir in ["/tmp", "/var/tmp"] {
        let _ = std::fs::create_dir_all(dir);
        let _ = std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o1777));
    }
    // Loopback, for the checks whose fixtures serve HTTP (Go's /debug/pprof).
    if let Err(e) = loopback_up() {
        println!("{MARK} log cannot bring up lo: {e}");
    }
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    println!("{MARK} kernel {}", release.trim());
    match std::fs::read(PLAN_PATH)
        .map_err(|e| e.to_string())
        .and_then(|b| serde_json::from_slice::<Plan>(&b).map_err(|e| e.to_string()))
    {
        Ok(plan) => {
            for check in &plan.checks {
                println!("{}", run(check).line());
            }
        }
        Err(e) => println!("{MARK} log cannot read the plan: {e}"),
    }
    println!("{MARK} done");
    // SAFETY: plain syscalls; restarting is how this machine ends.
    unsafe {
        libc::sync();
        libc::reboot(libc::RB_AUTOBOOT);
    }
    loop {
        std::thread::sleep(Duration::from_secs(60));
    }
}

fn mount(source: &str, target: &str, fstype: &str) -> std::io::Result<()> {
    std::fs::create_dir_all(target)?;
    let (s, t, f) = (cstr(source), cstr(target), cstr(fstype));
    // SAFETY: valid NUL-terminated strings; no data argument.
    if unsafe { libc::mount(s.as_ptr(), t.as_ptr(), f.as_ptr(), 0, std::ptr::null()) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Sets the loopback interface up, as `ip link set lo up` does.
fn loopback_up() -> std::io::Result<()> {
    // SAFETY: a plain socket, closed below; `ifreq` is plain data, named "lo" and passed by
    // pointer to the two ioctls that read and set its flags.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let mut req: libc::ifreq = std::mem::zeroed();
        for (i, b) in b"lo".iter().enumerate() {
            req.ifr_name[i] = *b as libc::c_char;
        }
        let mut result = Ok(());
        if libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut req) < 0 {
            result = Err(std::io::Error::last_os_error());
        } else {
            req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
            if libc::ioctl(fd, libc::SIOCSIFFLAGS, &req) < 0 {
                result = Err(std::io::Error::last_os_error());
            }
        }
        libc::close(fd);
        result
    }
}

fn umount(target: &str) {
    let t = cstr(target);
    // SAFETY: a valid NUL-terminated string.
    unsafe { libc::umount(t.as_ptr()) };
}

fn cstr(s: &str) -> CString {
    CString::new(s).expect("no NUL in mount arguments")
}

fn run(check: &Check) -> Outcome {
    println!("{MARK} begin {}", check.id);
    let started = Instant::now();
    let hidden = check.hide_btf && mount("tmpfs", BTF_DIR, "tmpfs").is_ok();
    let verdict = execute(check);
    if hidden {
        umount(BTF_DIR);
    }
    let (passed, why) = match verdict {
        Ok(()) => (true, String::new()),
        Err(why) => (false, why),
    };
    Outcome { id: check.id.clone(), passed, seconds: started.elapsed().as_secs_f64(), why }
}

/// Runs the check's program with its output going to a file (a pipe could fill up), then
/// prints that output on the console for the host's log.
fn execute(check: &Check) -> Result<(), String> {
    let log_path = format!("/tmp/{}.log", check.id);
    let log = std::fs::File::create(&log_path).map_err(|e| format!("cannot create {log_path}: {e}"))?;
    let err = log.try_clone().map_err(|e| e.to_string())?;
    let mut child = Command::new(&check.program)
        .args(&check.args)
        .env("PATH", "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin")
        .envs(check.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(err)
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", check.program))?;
    let deadline = Instant::now() + Duration::from_secs(check.timeout_s);
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() > deadline => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(100)),
            Err(e) => return Err(format!("cannot wait: {e}")),
        }
    };
    let mut output = String::new();
    let _ = std::fs::File::open(&log_path).and_then(|mut f| f.read_to_string(&mut output));
    for line in output.lines() {
        println!("  | {line}");
    }
    let Some(status) = status else { return Err(format!("timed out after {} s", check.timeout_s)) };
    let code = status.code().unwrap_or(-1);
    if code != check.expect_exit {
        return Err(format!("exit {code}, expected {}", check.expect_exit));
    }
    if !output.lines().any(|l| l.contains(&check.expect_output)) {
        return Err(format!("no output line contains {:?}", check.expect_output));
    }
    Ok(())
}
