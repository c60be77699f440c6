//! `cargo xtask vmtest [KERNEL]`: the kernel matrix. Boots Debian's own kernels under QEMU (TCG
//! when there is no KVM), each with an initramfs holding the agent, the integration tests and
//! their fixtures, runs the agent's end-to-end checks inside, and reports one table of kernel ×
//! check. Fails if any check fails on any kernel.

mod contents;
pub mod initramfs;
mod jre;
pub mod kernels;
pub mod plan;

use std::{
    collections::BTreeMap,
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use crate::util::{root, step};
use plan::{Check, Outcome, MARK};

/// Guest memory: the initramfs (about 150 MB) lives in it, beside the fixtures' needs.
const GUEST_MEMORY_MB: u32 = 3072;
/// Two CPUs, as the two-thread fixture and the off-CPU checks expect.
const GUEST_CPUS: u32 = 2;
/// A guest that has not powered off by then is stopped and its checks count as failed.
const GUEST_TIMEOUT: Duration = Duration::from_secs(600);
/// Runs the matrix on every kernel, or on the ones whose suite or release contains `only`.
pub fn run_matrix(only: Option<&str>) -> Result<()> {
    let started = Instant::now();
    let suites: Vec<&str> =
        kernels::SUITES.iter().copied().filter(|s| only.is_none_or(|o| s.contains(o) || o.contains(s))).collect();
    let kernels: Vec<kernels::Kernel> = kernels::SUITES
        .iter()
        .map(|s| kernels::ensure(s))
        .collect::<Result<Vec<_>>>()?
        .into_iter()
        .filter(|k| suites.contains(&k.suite.as_str()) || only.is_some_and(|o| k.release.contains(o)))
        .collect();
    if kernels.is_empty() {
        bail!("no kernel of the matrix matches {only:?}; known: {}", kernels::SUITES.join(", "));
    }
    let image = root().join("target/vmtest/initramfs.cpio");
    let checks = contents::pack(&image)?;
    let lanes = guests_at_once().min(kernels.len());
    step(&format!("kernel matrix: {} kernel(s), {lanes} guest(s) at a time", kernels.len()));
    let mut booted = crate::util::in_lanes(kernels.iter().collect(), lanes, |kernel| {
        step(&format!("kernel matrix: booting {} ({})", kernel.release, kernel.suite));
        let started = Instant::now();
        let outcomes = boot(kernel, &image);
        step(&format!("kernel matrix: {} done in {:.0} s", kernel.release, started.elapsed().as_secs_f64()));
        (kernel.clone(), outcomes, started.elapsed())
    });
    let mut rows = Vec::new();
    booted.sort_by_key(|(k, _, _)| kernels.iter().position(|o| o.suite == k.suite));
    for (kernel, outcomes, took) in booted {
        rows.push((kernel, outcomes?, took));
    }
    let table = table(&checks, &rows);
    let report = format!(
        "{table}\nWall time: {:.0} s on {} CPUs ({}).\n",
        started.elapsed().as_secs_f64(),
        num_cpus(),
        accel().1
    );
    std::fs::write(root().join("target/vmtest/matrix.md"), &report)?;
    println!("\n{report}");
    let failed: Vec<String> = rows
        .iter()
        .flat_map(|(k, outcomes, _)| {
            checks
                .iter()
                .filter(move |c| !outcomes.get(&c.id).is_some_and(|o| o.passed))
                .map(move |c| format!("{} on {}", c.id, k.release))
        })
        .collect();
    if !failed.is_empty() {
        bail!("kernel matrix: {} failed (logs in target/vmtest/*.log)", failed.join(", "));
    }
    Ok(())
}

/// Boots `kernel` with `image` and returns each check's outcome; the console goes to
/// target/vmtest/<suite>.log.
fn boot(kernel: &kernels::Kernel, image: &Path) -> Result<BTreeMap<String, Outcome>> {
    let log_path = root().join(format!("target/vmtest/{}.log", kernel.suite));
    let log = std::fs::File::create(&log_path)?;
    let (accel, _) = accel();
    let mut qemu = Command::new("qemu-system-x86_64")
        .args(["-nodefaults", "-no-reboot", "-display", "none", "-serial", "stdio", "-monitor", "none"])
        .args(["-machine", "pc", "-cpu", "max", "-accel", accel])
        .args(["-smp", &GUEST_CPUS.to_string(), "-m", &GUEST_MEMORY_MB.to_string()])
        .arg("-kernel")
        .arg(&kernel.image)
        .arg("-initrd")
        .arg(image)
        .args(["-append", "console=ttyS0 rdinit=/init panic=-1 oops=panic mitigations=off quiet loglevel=3"])
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot start qemu-system-x86_64")?;
    let deadline = Instant::now() + GUEST_TIMEOUT;
    while qemu.try_wait()?.is_none() {
        if Instant::now() > deadline {
            let _ = qemu.kill();
            step(&format!("{} did not finish within {GUEST_TIMEOUT:?}; stopped", kernel.release));
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let _ = qemu.wait();
    let mut stderr = String::new();
    if let Some(mut err) = qemu.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut err, &mut stderr);
    }
    if !stderr.trim().is_empty() {
        step(&format!("qemu said: {}", stderr.trim()));
    }
    let console = String::from_utf8_lossy(&std::fs::read(&log_path)?).into_owned();
    let outcomes: BTreeMap<String, Outcome> =
        console.lines().filter_map(Outcome::parse).map(|o| (o.id.clone(), o)).collect();
    for outcome in outcomes.values().filter(|o| !o.passed) {
        step(&format!("{} failed on {}: {}; its output:", outcome.id, kernel.release, outcome.why));
        print_check_log(&console, &outcome.id);
    }
    if let Some(at) = console.find("Oops:").or_else(|| console.find("Kernel panic")) {
        step(&format!("the guest kernel {} crashed:", kernel.release));
        for line in console[at..].lines().take(20) {
            eprintln!("    {line}");
        }
    }
    if !console.contains(&format!("{MARK} done")) {
        step(&format!("{} did not finish its plan; the console's last lines:", kernel.release));
        for line in console.lines().rev().take(30).collect::<Vec<_>>().into_iter().rev() {
            eprintln!("    {line}");
        }
    }
    Ok(outcomes)
}

fn print_check_log(console: &str, id: &str) {
    let begin = format!("{MARK} begin {id}");
    let lines = console.lines().skip_while(|l| !l.contains(&begin)).skip(1).take_while(|l| !l.contains(MARK));
    for line in lines {
        eprintln!("    {line}");
    }
}

/// KVM when this machine has it, else multi-threaded TCG. /dev/kvm alone is not enough: a VM
/// without virtualization flags may have the device and fail at the first guest MSR.
fn accel() -> (&'static str, &'static str) {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let flags = cpuinfo.lines().find(|l| l.starts_with("flags")).unwrap_or_default();
    let virtualization = flags.split_whitespace().any(|f| f == "vmx" || f == "svm");
    if virtualization && std::fs::OpenOptions::new().read(true).write(true).open("/dev/kvm").is_ok() {
        ("kvm", "KVM")
    } else {
        // One host thread for all vCPUs: with a thread per vCPU, TCG can run a stale translation
        // of kernel text that another vCPU has just patched (a tracepoint's static key at
        // attach), and the guest dies of an int3 oops in __schedule (seen on 7.2).
        ("tcg,thread=single", "QEMU TCG, no KVM")
    }
}

/// Guests booted at once: under TCG each runs on one host thread (`thread=single`), so one per
/// host CPU; under KVM each takes `GUEST_CPUS`.
fn guests_at_once() -> usize {
    let per_guest = if accel().0 == "kvm" { GUEST_CPUS as usize } else { 1 };
    (num_cpus() / per_guest).max(1)
}

fn num_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// The kernel × check table in Markdown, with each check's seconds.
fn table(checks: &[Check], rows: &[(kernels::Kernel, BTreeMap<String, Outcome>, Duration)]) -> String {
    let mut out = format!(
        "| kernel | {} | guest s |\n|---|{}---|\n",
        checks.iter().map(|c| c.id.as_str()).collect::<Vec<_>>().join(" | "),
        "---|".repeat(checks.len())
    );
    for (kernel, outcomes, took) in rows {
        let cells: Vec<String> = checks
            .iter()
            .map(|c| match outcomes.get(&c.id) {
                Some(o) if o.passed => format!("pass ({:.0} s)", o.seconds),
                Some(o) => format!("**FAIL** ({})", o.why),
                None => "**not run**".to_string(),
            })
            .collect();
        out.push_str(&format!(
            "| {} ({}) | {} | {:.0} |\n",
            kernel.release,
            kernel.suite,
            cells.join(" | "),
            took.as_secs_f64()
        ));
    }
    out
}
