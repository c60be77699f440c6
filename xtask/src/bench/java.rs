//! Row 16: Java (Debian 12's OpenJDK 17, `tests/fixtures/jit/Bench.java`), with no flag: a
//! CPU-bound loop's slowdown under the agent (the working thread's own CPU time), and what an
//! on-CPU sample costs the probes when the walk goes through the JVM's code cache by its rows and
//! emits interpreted methods, against a native loop's sample measured in the same run.

use std::{path::PathBuf, process::Command};

use anyhow::{ensure, Result};

use super::{bpf_stats::StatsSwitch, process::ToolKind, python::cost_table, rows::slowdown, Bench};
use crate::util::{root, step};

/// The JVM, as the bench runs its fixture: `target/bench/java`.
const FIXTURE: &str = "java";
const JAVA: &str = "/usr/lib/jvm/java-17-openjdk-amd64/bin/java";

/// The fixture's classes, compiled into the bench's directory.
fn classes(bench: &Bench) -> Result<PathBuf> {
    let dir = bench.bin.join("java-classes");
    let status = Command::new("javac")
        .arg("-nowarn")
        .arg("-XDignore.symbol.file")
        .arg("-d")
        .arg(&dir)
        .arg(root().join("tests/fixtures/jit/Bench.java"))
        .status()?;
    ensure!(status.success(), "javac failed on tests/fixtures/jit/Bench.java");
    Ok(dir)
}

pub fn java_programs(bench: &Bench) -> Result<String> {
    step("16 Java: slowdown of a CPU-bound loop, probe cost against a native sample");
    let link = bench.fixture(FIXTURE);
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(JAVA, &link)?;
    let cp = classes(bench)?.to_string_lossy().into_owned();
    let cpu = vec!["-cp".to_string(), cp, "Bench".into(), "cpu".into(), bench.opts.java_rounds.to_string()];
    let mut md = format!(
        "## 16. Java programs\n\nDebian 12's OpenJDK 17 running `tests/fixtures/jit/Bench.java` with no flag (no \
         `-XX:+PreserveFramePointer`, no perf map): `Bench cpu {}` starts on SIGUSR1 once the tool has attached and \
         prints the CPU seconds its working thread took. The agent walks its Java frames by the code cache's rows and \
         names them from the JVM's memory; nothing is asked of the JVM.\n\n",
        bench.opts.java_rounds
    );
    {
        let _stats = StatsSwitch::set(false)?;
        let table = slowdown(bench, FIXTURE, &cpu, &[ToolKind::Alone, ToolKind::Autodump])?.replacen(
            "wall seconds",
            "target CPU seconds",
            1,
        );
        md += &format!("### CPU-bound loop (one thread)\n\n{table}\n");
    }
    {
        let _stats = StatsSwitch::set(true)?;
        let native = vec!["1".to_string(), bench.opts.cpu_rounds.to_string()];
        let cases: [(&str, &str, &[String], &str); 2] = [
            ("on-CPU sample, Java loop (OpenJDK 17, no flag)", FIXTURE, &cpu, "on_cpu_unwind"),
            ("on-CPU sample, native loop (`bench_cpu 1`)", "bench_cpu", &native, "on_cpu_unwind"),
        ];
        md += &cost_table(bench, "### Probe cost (kernel.bpf_stats_enabled)", &cases)?;
    }
    Ok(md)
}
