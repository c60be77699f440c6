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
    ("chromium", "chromium"),
    ("bpftool", "bpftool"),
    ("qemu-system-x86", "qemu-system-x86_64"),
    ("xz-utils", "xz"),
    ("zstd", "zstd"),
    // The reference the unwinding tests compare against: `perf record --call-graph dwarf`.
    ("linux-perf", "perf"),
    // glibc's symbols, so that frames in it (start_thread, the wrappers) have names.
    ("libc6-dbg", "/usr/share/doc/libc6-dbg"),
];

pub fn all() -> Result<()> {
    toolchain()?;
    apt_packages(TEST_PACKAGES)?;
    crate::newer_go::ensure()?;
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
