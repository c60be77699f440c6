//! Row 6: symbolizing binaries as they are shipped, with `autodump-symbolize-bench` (built
//! beside the agent): the first symbolization of each file (which loads its tables) and the
//! throughput over stacks of its text addresses, for stripped Go binaries of two Go versions
//! and stripped native code.

use std::{fmt::Write as _, path::PathBuf, process::Command};

use anyhow::{Context, Result};

use super::Bench;
use crate::util::{root, step};

/// Stacks timed per file.
const STACKS: &str = "200000";

pub fn symbolization(bench: &Bench) -> Result<String> {
    step("6/9 symbolizing shipped binaries");
    let helper = bench.agent.with_file_name("autodump-symbolize-bench");
    let files: Vec<(PathBuf, &str)> = vec![
        (
            root().join("target/go-toolchains/newest/pkg/tool/linux_amd64/compile"),
            "Go compiler of Debian unstable (stripped Go)",
        ),
        (PathBuf::from("/usr/lib/go-1.19/pkg/tool/linux_amd64/compile"), "Go 1.19 compiler of Debian 12 (stripped Go)"),
        (PathBuf::from("/usr/lib/go-1.19/bin/gofmt"), "gofmt of Debian 12 (stripped Go)"),
        (PathBuf::from("/usr/bin/gzip"), "gzip of Debian 12 (stripped C)"),
        (PathBuf::from("/lib/x86_64-linux-gnu/libc.so.6"), "glibc 2.36 (debug file from libc6-dbg)"),
    ];
    let mut md = format!(
        "## 6. Symbolizing shipped binaries\n\n`autodump-symbolize-bench FILE {STACKS}`: the agent's symbolizer over FILE mapped \
         into the helper, the first symbolization (loading the file's tables) and {STACKS} stacks of 16 frames drawn from \
         5,000 distinct text addresses (each looked up once, then cached, as the agent does). RSS is the helper's, \
         symbolizer and mapped file included.\n\n| file | MiB | first symbolization | stacks/s | frames named | RSS MiB |\n|---|---|---|---|---|---|\n"
    );
    for (file, label) in files.iter().filter(|(f, _)| f.exists()) {
        let out = Command::new(&helper)
            .arg(file)
            .arg(STACKS)
            .output()
            .with_context(|| format!("cannot run {}", helper.display()))?;
        let json: serde_json::Value =
            serde_json::from_slice(&out.stdout).with_context(|| String::from_utf8_lossy(&out.stderr).into_owned())?;
        let number = |k: &str| json[k].as_f64().unwrap_or(f64::NAN);
        eprintln!("    {label}: {json}");
        let _ = writeln!(
            md,
            "| {label} | {:.1} | {:.1} ms | {:.0} | {:.1}% | {:.1} |",
            number("file_mib"),
            number("first_ms"),
            number("stacks_per_s"),
            number("named_frames") * 100.0,
            number("rss_mib")
        );
    }
    md.push('\n');
    Ok(md)
}
