//! Row 16: Java (Debian 12's OpenJDK 17, `tests/fixtures/jit/Bench.java`), with no flag: a
//! CPU-bound loop's slowdown under the agent (the working thread's own CPU time), and what an
//! on-CPU sample costs the probes when the walk goes through the JVM's code cache by its rows and
//! emits interpreted methods, against a native loop's sample measured in the same run.

use std::{fmt::Write as _, path::PathBuf, process::Command};

use anyhow::{ensure, Result};

use super::{
    bpf_stats::StatsSwitch,
    process::{signal, Target, Tool, ToolKind},
    python::cost_table,
    rows::slowdown,
    Bench,
};
use crate::util::{root, step};

/// Distinct Java methods the many-methods target runs in turn, in groups of `GROUP` (a method's
/// bytecode is bounded: one method cannot call them all).
const METHODS: usize = 10_000;
const GROUP: usize = 100;

/// The JVM, as the bench runs its fixture: `target/bench/java`.
const FIXTURE: &str = "java";
const JAVA: &str = "/usr/lib/jvm/java-17-openjdk-amd64/bin/java";

/// The fixture's classes, and a generated class of `METHODS` methods (`Many`), compiled into the
/// bench's directory.
fn classes(bench: &Bench) -> Result<PathBuf> {
    let dir = bench.bin.join("java-classes");
    std::fs::create_dir_all(&dir)?;
    let many = dir.join("Many.java");
    std::fs::write(&many, many_source())?;
    let status = Command::new("javac")
        .arg("-nowarn")
        .arg("-XDignore.symbol.file")
        .arg("-d")
        .arg(&dir)
        .arg(root().join("tests/fixtures/jit/Bench.java"))
        .arg(&many)
        .status()?;
    ensure!(status.success(), "javac failed on the Java bench targets");
    Ok(dir)
}

/// `Many`: prints "ready", waits for SIGUSR1, then calls `METHODS` distinct methods in turn until
/// killed.
fn many_source() -> String {
    let mut src = String::from("public class Many {\n    static volatile long sink;\n");
    for i in 0..METHODS {
        let _ = writeln!(
            src,
            "    static long m{i}(long x) {{ for (int i = 0; i < 20; i++) x = x * 31 + {i}; return x; }}"
        );
    }
    for g in 0..METHODS / GROUP {
        let calls: String = (g * GROUP..(g + 1) * GROUP).map(|i| format!(" x = m{i}(x);")).collect();
        let _ = writeln!(src, "    static long g{g}(long x) {{{calls} return x; }}");
    }
    let groups: String = (0..METHODS / GROUP).map(|g| format!(" x = g{g}(x);")).collect();
    let _ = writeln!(
        src,
        "    public static void main(String[] a) throws Exception {{\n        \
         java.util.concurrent.CountDownLatch go = new java.util.concurrent.CountDownLatch(1);\n        \
         sun.misc.Signal.handle(new sun.misc.Signal(\"USR1\"), s -> go.countDown());\n        \
         System.out.println(\"ready\");\n        System.out.flush();\n        go.await();\n        \
         long x = 1;\n        while (true) {{{groups} sink = x; }}\n    }}\n}}"
    );
    src
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
    md += &many_methods(bench)?;
    Ok(md)
}

/// The agent's CPU (second half of the window) and memory while the JVM runs `METHODS` distinct
/// methods in turn.
fn many_methods(bench: &Bench) -> Result<String> {
    let window = bench.opts.many_window / 2;
    let cp = bench.bin.join("java-classes").to_string_lossy().into_owned();
    let target = Target::start(&bench.fixture(FIXTURE), &["-cp".into(), cp, "Many".into()])?;
    let scratch = bench.fresh_scratch()?;
    let argv = ToolKind::Autodump.command(&bench.agent, target.pid(), &scratch).expect("the agent");
    let mut agent = Tool::start(ToolKind::Autodump, &argv, &[])?;
    signal(target.pid(), "USR1")?;
    let (cpu, peak, steady) = agent.footprint(window)?;
    agent.stop()?;
    eprintln!("    {METHODS} methods: agent {cpu:.2}% of a core, peak {peak:.1} MiB, steady {steady:.1} MiB");
    Ok(format!(
        "### The agent with {METHODS} distinct Java methods\n\n`Many` (generated by the bench): one thread calls \
         {METHODS} methods in turn, for {}, interpreted then compiled as the JVM goes; the agent at its defaults. CPU \
         is the agent's utime+stime over the second half, in percent of one core; peak is VmHWM, steady VmRSS at the \
         end.\n\n| agent CPU | peak RSS | steady RSS |\n|---|---|---|\n| {cpu:.2}% | {peak:.1} MiB | {steady:.1} MiB \
         |\n\n",
        humantime::format_duration(window)
    ))
}
