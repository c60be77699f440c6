//! What a kernel-matrix guest carries: the agent, the integration tests and the fixtures the
//! checks start, the interpreters and the JVM they run, the libraries `ldd` names and the plan of checks,
//! packed into one initramfs.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context, Result};

use super::{
    initramfs, jre,
    plan::{self, Check, Plan, PLAN_PATH},
};
use crate::util::{root, run, step};

/// Fixtures the checks start, built on the host before they are packed.
const FIXTURES: &[&str] = &[
    "two_threads",
    "cpuload",
    "blocker",
    "misbehave",
    "goleak",
    "goleak-stripped",
    "libc_blocker",
    "memleak",
    "gopublisher_plain-stripped",
    "gowaits",
];

/// (column, integration test binary, test name) of the checks that run an integration test.
const TEST_CHECKS: &[(&str, &str, &str)] = &[
    ("on-cpu", "on_cpu", "sample_counts_and_shares_match_cpu_time"),
    ("off-cpu", "off_cpu", "blocked_time_per_function_matches_known_sleeps"),
    ("watch-spike", "watch", "cpu_spike_gives_one_bundle_reaching_back_before_it"),
    ("exit-signal", "watch", "segfault_leaves_an_exit_bundle_with_the_signal"),
    ("goroutines", "go_runtime", "goroutine_leak_is_counted_exactly_and_dumped"),
    ("goroutines-stripped", "go_runtime", "stripped_goroutine_leak_is_counted_exactly_and_dumped"),
    ("go-waits", "go_waits", "goroutine_waits_match_gos_own_profiles"),
    ("degraded", "kernel_support", "a_missing_exit_probe_costs_the_exit_code_only"),
    ("unwind-glibc", "unwinding", "culprits_show_under_glibc_wrappers_with_their_time"),
    ("faults", "memory", "native_leak_is_named_and_churn_barely_shows"),
    ("go-faults", "go_heap", "memory_profiling_off_is_said_and_faults_still_name_the_leak"),
    ("restarts", "services", "a_crashing_service_is_followed_across_restarts"),
    ("cgroup", "services", "a_cgroup_is_followed_as_processes_move_in_and_out"),
    ("python", "python_service", "python_generators_tasks_and_faults_are_named"),
    ("ruby", "ruby", "ruby_on_cpu_shares_match_rbspy_or_stackprof"),
];

/// The Java check's test (in the `hotspot` binary): a JVM's code compiled while it is recorded,
/// walked whole (which needs only `java`).
const JAVA_TEST: &str = "code_compiled_while_recorded_is_walked_whole_within_a_code_check";

/// An interpreter a check runs, packed at its host paths: the executable (with the libraries it
/// links), its library directories without what no check loads, and its fixtures.
struct Interpreter {
    exe: &'static str,
    dirs: &'static [&'static str],
    skip: &'static [&'static str],
    fixtures: &'static str,
}

/// The host's CPython for the Python check (its standard library without tests, IDLE, Tk, or
/// bytecode caches: about 20 MB), and its CRuby for the Ruby check (its libraries and the specs
/// of its default gems, which it reads at start: about 17 MB).
const INTERPRETERS: &[Interpreter] = &[
    Interpreter {
        exe: "/usr/bin/python3.11",
        dirs: &["/usr/lib/python3.11"],
        skip: &[
            "__pycache__",
            "test",
            "tests",
            "idlelib",
            "tkinter",
            "ensurepip",
            "lib2to3",
            "pydoc_data",
            "dist-packages",
        ],
        fixtures: "tests/fixtures/python",
    },
    Interpreter {
        exe: "/usr/bin/ruby3.1",
        dirs: &[
            "/usr/lib/ruby/3.1.0",
            "/usr/lib/x86_64-linux-gnu/ruby/3.1.0",
            "/usr/lib/ruby/vendor_ruby",
            "/usr/lib/ruby/gems/3.1.0/specifications",
        ],
        skip: &["rdoc", "rubygems/ssl_certs"],
        fixtures: "tests/fixtures/ruby",
    },
];

/// Builds the agent, the tests, the fixtures and the guest's init, and packs them into `image`.
pub fn pack(image: &Path) -> Result<Vec<Check>> {
    let agent = crate::build()?;
    step("kernel matrix: building the tests, fixtures and guest init");
    let tests = test_binaries()?;
    let fixtures = crate::util::output(
        crate::util::cargo()
            .args(["run", "-q", "-p", "autodump-tests", "--bin", "build-fixtures", "--"])
            .args(FIXTURES),
    )
    .context("cannot build the fixtures")?;
    run(crate::util::cargo().args(["build", "-q", "--release", "-p", "xtask", "--bin", "vmtest-init"]))?;
    let init = root().join("target/release/vmtest-init");

    let agent_path = agent.to_string_lossy().into_owned();
    let env = |extra: &[(&str, &str)]| -> Vec<(String, String)> {
        [
            ("AUTODUMP_AGENT", agent_path.as_str()),
            ("AUTODUMP_REQUIRE_BPF", "1"),
            ("AUTODUMP_IN_VM", "1"),
            ("HOME", "/root"),
            ("RUST_BACKTRACE", "1"),
        ]
        .iter()
        .chain(extra)
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    };
    let mut checks = Vec::new();
    for (id, binary, test) in TEST_CHECKS {
        let program = tests.get(*binary).with_context(|| format!("no test binary {binary}"))?;
        checks.push(Check {
            id: id.to_string(),
            program: program.to_string_lossy().into_owned(),
            args: [test, "--exact", "--test-threads=1", "--nocapture"].map(String::from).to_vec(),
            env: env(&[]),
            timeout_s: 300,
            expect_exit: 0,
            expect_output: "1 passed".into(),
            hide_btf: false,
        });
    }
    // Java: HotSpot's frames walked and named from its own tables, with no flag and no attach
    // (Debian's JVM, its JDK cut down to what the fixture runs).
    let java = jre::build()?;
    let program = tests.get("hotspot").context("no test binary hotspot")?;
    let path = format!("{}:/usr/bin:/bin", java.home.join("bin").display());
    let classes = java.classes.to_string_lossy().into_owned();
    checks.push(Check {
        id: "java".into(),
        program: program.to_string_lossy().into_owned(),
        args: [JAVA_TEST, "--exact", "--test-threads=1", "--nocapture"].map(String::from).to_vec(),
        env: env(&[("PATH", &path), ("AUTODUMP_JAVA_CLASSES", &classes)]),
        timeout_s: 300,
        expect_exit: 0,
        expect_output: "1 passed".into(),
        hide_btf: false,
    });
    // The probes load, and how much the verifier had to check (logged per program): the
    // kernels' verifiers differ most in what a walk under bpf_loop costs them.
    checks.push(Check {
        id: "load".into(),
        program: agent_path.clone(),
        args: ["--pid", "1", "--duration", "2s", "--log", "debug", "--out", "/tmp/load"].map(String::from).to_vec(),
        env: env(&[]),
        timeout_s: 120,
        expect_exit: 0,
        expect_output: "probe loaded".into(),
        hide_btf: false,
    });
    // A kernel without BTF, as the agent sees it: exit 5 and a line naming BTF.
    checks.push(Check {
        id: "no-btf".into(),
        program: agent_path.clone(),
        args: ["--pid", "1", "--duration", "1s", "--out", "/tmp/no-btf"].map(String::from).to_vec(),
        env: env(&[]),
        timeout_s: 60,
        expect_exit: 5,
        expect_output: "BTF".into(),
        hide_btf: true,
    });

    // Every path the guest needs must stay visible after its init mounts its file systems.
    let packed =
        [root(), agent.clone(), init.clone()].into_iter().chain(checks.iter().map(|c| PathBuf::from(&c.program)));
    for path in packed {
        if let Some(mount) = plan::hidden_by(&path.to_string_lossy()) {
            bail!(
                "{} lies under {mount}, which the kernel matrix's guests mount over; move the workspace",
                path.display()
            );
        }
    }
    let mut fs = initramfs::Initramfs::default();
    fs.file_as(&init, "/init")?;
    fs.file_as(&agent, &agent_path)?;
    for binary in checks.iter().map(|c| PathBuf::from(&c.program)) {
        // The test binaries without their debug sections: 30 MB each with them, which every
        // guest would unpack at boot.
        let packed = if binary == agent { binary.clone() } else { without_debug(&binary)? };
        fs.file_as(&packed, &binary.to_string_lossy())?;
    }
    for fixture in fixtures.lines() {
        fs.file_as(Path::new(fixture), fixture)?;
    }
    for interpreter in INTERPRETERS {
        pack_interpreter(&mut fs, interpreter)?;
    }
    jre::pack(&mut fs, &java)?;
    // glibc's own symbols (libc6-dbg, as on the host), so that frames in it are named there too.
    if let Some(debug) = glibc_debug_file() {
        fs.host_path(&debug)?;
    }
    for dir in ["/proc", "/sys", "/dev", "/tmp", "/var/tmp", "/root"] {
        fs.dir(dir);
    }
    fs.bytes(PLAN_PATH, serde_json::to_vec_pretty(&Plan { checks: checks.clone() })?);
    let size = fs.write(image)?;
    step(&format!("kernel matrix: initramfs of {} MB", size >> 20));
    Ok(checks)
}

/// An interpreter, its libraries and its fixtures, at their host paths.
fn pack_interpreter(fs: &mut initramfs::Initramfs, interpreter: &Interpreter) -> Result<()> {
    fs.file_as(Path::new(interpreter.exe), interpreter.exe)?;
    let mut pending: Vec<PathBuf> = interpreter.dirs.iter().map(PathBuf::from).collect();
    pending.push(root().join(interpreter.fixtures));
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).with_context(|| format!("cannot read {}", dir.display()))? {
            let path = entry?.path();
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            let skipped = interpreter.skip.iter().any(|s| path.ends_with(s));
            if skipped || name.starts_with("config-") {
                continue;
            }
            if path.is_dir() {
                pending.push(path);
            } else if name.ends_with(".so") {
                fs.file_as(&path, &path.to_string_lossy())?;
            } else {
                fs.host_path(&path)?;
            }
        }
    }
    Ok(())
}

/// A copy of `binary` without its debug sections, in target/vmtest/stripped.
fn without_debug(binary: &Path) -> Result<PathBuf> {
    let dir = root().join("target/vmtest/stripped");
    std::fs::create_dir_all(&dir)?;
    let out = dir.join(binary.file_name().context("a test binary without a name")?);
    run(Command::new("objcopy").arg("--strip-debug").arg(binary).arg(&out))
        .with_context(|| format!("cannot strip {}", binary.display()))?;
    Ok(out)
}

/// The separate debug file of the host's glibc, by build id, if libc6-dbg is installed.
fn glibc_debug_file() -> Option<PathBuf> {
    let notes = crate::util::output(Command::new("readelf").args(["-n", "/lib/x86_64-linux-gnu/libc.so.6"]))?;
    let id = notes.lines().find_map(|l| l.trim().strip_prefix("Build ID: "))?.trim().to_string();
    let path = PathBuf::from(format!("/usr/lib/debug/.build-id/{}/{}.debug", &id[..2], &id[2..]));
    path.exists().then_some(path)
}

/// The integration test binaries by target name (`on_cpu`, `watch`, ...), built as
/// `cargo xtask test` builds them.
fn test_binaries() -> Result<BTreeMap<String, PathBuf>> {
    let out = crate::util::output(crate::util::cargo().args([
        "test",
        "-p",
        "autodump-tests",
        "--no-run",
        "--message-format=json",
    ]))
    .context("cannot build the integration tests")?;
    let mut binaries = BTreeMap::new();
    for line in out.lines() {
        let Ok(message) = serde_json::from_str::<serde_json::Value>(line) else { continue };
        if message["reason"] == "compiler-artifact" && message["profile"]["test"] == true {
            if let (Some(name), Some(exe)) = (message["target"]["name"].as_str(), message["executable"].as_str()) {
                binaries.insert(name.to_string(), PathBuf::from(exe));
            }
        }
    }
    Ok(binaries)
}
