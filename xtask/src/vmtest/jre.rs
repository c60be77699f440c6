//! The Java check's JVM in a guest: Debian's JDK 17 cut down by `jlink` to `java.base` (37 MB
//! where the JDK is 260: its `libjvm.so` as Debian ships it), and the Java fixture
//! compiled on the host (a guest has no compiler).

use std::{path::PathBuf, process::Command};

use anyhow::{Context, Result};

use super::initramfs::Initramfs;
use crate::util::{root, run, step};

pub struct Java {
    /// The cut-down runtime (its `bin/java`).
    pub home: PathBuf,
    /// `Chain.class` and its inner classes.
    pub classes: PathBuf,
}

/// Builds both under `target/vmtest`, afresh each time: an upgraded JDK leaves no stale copy.
pub fn build() -> Result<Java> {
    step("kernel matrix: cutting a JRE (java.base) from the host's JDK for the Java check");
    let dir = root().join("target/vmtest");
    let (home, classes) = (dir.join("jre"), dir.join("java-classes"));
    for stale in [&home, &classes] {
        let _ = std::fs::remove_dir_all(stale);
    }
    run(Command::new("jlink")
        .args(["--add-modules", "java.base", "--no-header-files", "--no-man-pages", "--compress=2", "--output"])
        .arg(&home))
    .context("cannot cut a JRE with jlink (cargo xtask setup installs the JDK)")?;
    run(Command::new("javac").arg("-d").arg(&classes).arg(root().join("tests/fixtures/jit/Chain.java")))
        .context("cannot compile the Java fixture")?;
    Ok(Java { home, classes })
}

/// Packs both at their host paths: executables and libraries with the libraries they link.
pub fn pack(fs: &mut Initramfs, java: &Java) -> Result<()> {
    let mut pending = vec![java.home.clone(), java.classes.clone()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).with_context(|| format!("cannot read {}", dir.display()))? {
            let path = entry?.path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|e| e == "so") || path.parent().is_some_and(|p| p.ends_with("bin")) {
                fs.file_as(&path, &path.to_string_lossy())?;
            } else {
                fs.host_path(&path)?;
            }
        }
    }
    Ok(())
}
