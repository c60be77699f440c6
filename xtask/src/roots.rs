//! Debian 13's and unstable's CPython, CRuby and JDK (21 and 25) for the runtime tests, each in a
//! root filesystem of its own release (an interpreter needs that release's libc):
//! `debootstrap --variant=minbase` with the Python interpreter included, under
//! `target/python-roots/SUITE`, then the release's Ruby and JDK installed in it (unstable's
//! newest Ruby, 3.4, is in Debian's experimental suite). The tests
//! run them with `chroot`, as a container would, so the agent also reads an interpreter in
//! another root.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result};

use crate::util::{root, run, step};

/// Each suite and the package of the Python it is for: trixie's 3.13, and unstable's default
/// python3 (its newest CPython: 3.14 now). The tests read this list's suites.
pub const ROOTS: &[(&str, &str)] = &[("trixie", "python3.13"), ("sid", "python3")];
/// Each suite's Ruby: its packages (the interpreter first) and the suite they come from
/// (unstable's newest CRuby, 3.4, is in experimental, built against unstable). Debian 13's comes
/// with stackprof, Ruby's own sampler, the reference for a version rbspy cannot read.
const RUBIES: &[(&str, &[&str], &str)] =
    &[("trixie", &["ruby3.3", "ruby-stackprof"], "trixie"), ("sid", &["ruby3.4"], "experimental")];
/// Each suite's JDK (Debian 13's 21, unstable's 25), for the Java tests: its headless JDK, with
/// `jcmd` and `jfr`. Its packages' scripts run Java, which needs `/proc`: they are installed in a mount namespace
/// of their own with `/proc` mounted in the root, so nothing stays mounted after.
const JDKS: &[(&str, &str)] = &[("trixie", "openjdk-21-jdk-headless"), ("sid", "openjdk-25-jdk-headless")];
const MIRROR: &str = "http://deb.debian.org/debian";

fn dir(suite: &str) -> PathBuf {
    root().join("target/python-roots").join(suite)
}

/// The interpreter of a finished root (its `ready` file, written last, names it).
fn ready(dir: &Path) -> Option<PathBuf> {
    let exe = PathBuf::from(std::fs::read_to_string(dir.join("ready")).ok()?.trim());
    dir.join(exe.strip_prefix("/").ok()?).exists().then_some(exe)
}

/// Makes the roots that are not there yet; says what it finds or does.
pub fn ensure() -> Result<()> {
    for &(suite, package) in ROOTS {
        let dir = dir(suite);
        if let Some(exe) = ready(&dir) {
            step(&format!("Debian {suite}'s {} is ready in {}", exe.display(), dir.display()));
            continue;
        }
        step(&format!(
            "making a Debian {suite} root with {package} for the Python tests (debootstrap, into {})",
            dir.display()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        let work = dir.with_extension("partial");
        let _ = std::fs::remove_dir_all(&work);
        std::fs::create_dir_all(work.parent().unwrap())?;
        run(Command::new("debootstrap")
            .args(["--variant=minbase", &format!("--include={package}"), suite])
            .arg(&work)
            .arg(MIRROR)
            .stdout(std::process::Stdio::null()))
        .with_context(|| format!("debootstrap of Debian {suite} failed (needs deb.debian.org)"))?;
        let exe = newest_python(&work).with_context(|| format!("no python3.N in Debian {suite}'s root"))?;
        std::fs::rename(&work, &dir)?;
        std::fs::write(dir.join("ready"), exe.to_string_lossy().as_bytes())?;
        step(&format!("Debian {suite}'s {} ready", exe.display()));
    }
    for &(suite, packages, from) in RUBIES {
        install(&dir(suite), "ruby", packages, (from != suite).then_some(from))?;
    }
    for &(suite, package) in JDKS {
        install(&dir(suite), "jdk", &[package], None)?;
    }
    Ok(())
}

/// Installs `packages` (`ruby3.4`) into a finished root, from Debian's suite `from` when it is
/// not the root's own, unless they are there (a `ready-KIND` file, written last, lists them).
/// With `/proc` mounted in the root, in a mount namespace of its own (a JDK's scripts need it).
fn install(dir: &Path, kind: &str, packages: &[&str], from: Option<&str>) -> Result<()> {
    let ready = dir.join(format!("ready-{kind}"));
    let package = packages.join(" ");
    if std::fs::read_to_string(&ready).is_ok_and(|r| r.trim() == package) {
        step(&format!("{package} ready in {}", dir.display()));
        return Ok(());
    }
    let suite = from.map(|f| format!(" from Debian {f}")).unwrap_or_default();
    step(&format!("installing {package}{suite} into {} (apt in the root)", dir.display()));
    if let Some(from) = from {
        let list = dir.join(format!("etc/apt/sources.list.d/autodump-{kind}.list"));
        std::fs::write(&list, format!("deb {MIRROR} {from} main\n"))?;
    }
    // A root made weeks ago holds release files apt now calls expired: they are still Debian's.
    let apt = "apt-get -o Acquire::Check-Valid-Until=false";
    let target = from.map(|f| format!("-t {f}")).unwrap_or_default();
    let script = format!(
        "mount -t proc proc /proc && {apt} update -qq && DEBIAN_FRONTEND=noninteractive {apt} install -y -qq \
         --no-install-recommends {target} {package}"
    );
    let mut command = Command::new("unshare");
    command.args(["--mount", "--propagation", "private", "chroot"]).arg(dir).args(["sh", "-c", &script]);
    run(command.stdout(std::process::Stdio::null()))
        .with_context(|| format!("cannot install {package} in {} (needs deb.debian.org)", dir.display()))?;
    std::fs::write(&ready, &package)?;
    step(&format!("{package} ready in {}", dir.display()));
    Ok(())
}

/// `/usr/bin/python3.N` of the highest N in the root.
fn newest_python(root: &Path) -> Option<PathBuf> {
    std::fs::read_dir(root.join("usr/bin"))
        .ok()?
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.strip_prefix("python3.")?.parse::<u32>().ok())
        .max()
        .map(|minor| PathBuf::from(format!("/usr/bin/python3.{minor}")))
}
