//! Debian 13's and unstable's CPython for the Python tests, each in a root filesystem of its own
//! release (the interpreter needs that release's libc): `debootstrap --variant=minbase` with the
//! interpreter included, under `target/python-roots/SUITE`. The tests run it with `chroot`, as a
//! container would, so the agent also reads an interpreter in another root.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result};

use crate::util::{root, run, step};

/// Each suite and the package of the interpreter it is for: trixie's 3.13, and unstable's
/// default python3 (its newest CPython: 3.14 now). The tests read this list's suites.
pub const ROOTS: &[(&str, &str)] = &[("trixie", "python3.13"), ("sid", "python3")];
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
