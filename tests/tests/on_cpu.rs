//! On-CPU sampling on a fixture with two threads at known duty cycles: total samples match
//! frequency × CPU time, and each thread's share lands in its own function.

use std::time::{Duration, Instant};

use autodump_tests::{
    assert_close, favour_cpu, require_bpf, scratch_dir, steal_fraction, steal_ticks, thread_cpu_ticks,
    ticks_per_second, Fixture, RunningAgent,
};

const FREQUENCY: u64 = 99;
/// Sample counts within 10% of frequency × CPU time: the kernel adjusts the cpu-clock period
/// to hit the frequency, and /proc's CPU time has 10 ms granularity.
///
/// On a virtual machine the cpu-clock timer runs on wall time, so a thread that held a CPU
/// while the hypervisor stole it is sampled for that time too, while the scheduler's CPU time
/// leaves stolen time out. The expectation therefore scales CPU time by 1 / (1 − stolen
/// fraction), the fraction read from /proc/stat over the same window.
const COUNT_TOLERANCE: f64 = 0.10;
/// The same in the kernel matrix's guests. QEMU's TCG runs every instruction of the probes tens
/// of times slower than a CPU does, and there the CFI walk of each sample takes long enough in
/// the timer interrupt that these kernels' tick-based CPU time falls behind the samples: 4-13%
/// over in the runs here (1% with frame pointers, whose walk is short). With the page-fault probe
/// attached as well, 18-26% over on 6.12 and 7.2 (and within 20% with it turned off); the host
/// stays within 1%. Counts are held to 10% on real CPUs (the host run); the guests check that
/// every kernel loads and runs the probes.
const COUNT_TOLERANCE_IN_VM: f64 = 0.30;
/// Each thread's share of the samples within 5 percentage points of its share of CPU time.
const SHARE_TOLERANCE: f64 = 0.05;
/// At most 1% of samples without their user stack (stack-map hash collisions).
const MAX_LOST_STACKS: f64 = 0.01;

#[test]
fn sample_counts_and_shares_match_cpu_time() {
    if !require_bpf("sample_counts_and_shares_match_cpu_time") {
        return;
    }
    favour_cpu();
    let fixture = Fixture::start("two_threads", &[]);
    let out = scratch_dir("on_cpu");
    let freq = FREQUENCY.to_string();
    let pid = fixture.pid.to_string();
    let mut agent =
        RunningAgent::start(&["--pid", &pid, "--duration", "6s", "--frequency", &freq, "--out", out.to_str().unwrap()]);
    agent.wait_recording(Duration::from_secs(30));
    let (t0, before, steal_before) = (Instant::now(), thread_cpu_ticks(fixture.pid), steal_ticks());
    let run = agent.finish();
    let (elapsed, after, steal_after) = (t0.elapsed().as_secs_f64(), thread_cpu_ticks(fixture.pid), steal_ticks());
    let bundle = run.bundle();
    let window = bundle.window_seconds();

    // Seconds each thread would have held a CPU over exactly the agent's window, stolen time included.
    let stolen = steal_fraction(steal_before, steal_after, elapsed);
    let cpu =
        |thread: &str| (after[thread] - before[thread]) as f64 / ticks_per_second() * window / elapsed / (1.0 - stolen);
    let (hot, warm) = (cpu("hot"), cpu("warm"));
    eprintln!("window {window:.2}s, {:.1}% stolen: hot {hot:.2} CPU-s, warm {warm:.2} CPU-s", stolen * 100.0);
    assert!(hot > 0.5 * window, "the hot thread should be mostly on CPU (got {hot:.2}s of {window:.2}s)");

    let summary = bundle.summary();
    let samples = summary["cpu"]["samples"].as_u64().unwrap() as f64;
    let expected = (hot + warm) * FREQUENCY as f64;
    let in_vm = std::env::var("AUTODUMP_IN_VM").as_deref() == Ok("1");
    let count_tolerance = if in_vm { COUNT_TOLERANCE_IN_VM } else { COUNT_TOLERANCE };
    assert_close("total on-CPU samples", samples, expected, count_tolerance);

    let folded_total = bundle.weight("cpu.folded", |_| true) as f64;
    assert_eq!(folded_total, samples, "cpu.folded holds every sample");
    let hot_samples = bundle.weight_in("cpu.folded", "hot", "hot_spin") as f64;
    let warm_samples = bundle.weight_in("cpu.folded", "warm", "warm_spin") as f64;
    assert_close("hot_spin samples", hot_samples, hot * FREQUENCY as f64, count_tolerance);
    assert_close("warm_spin samples", warm_samples, warm * FREQUENCY as f64, count_tolerance * 2.0);
    let share = hot_samples / samples;
    let expected_share = hot / (hot + warm);
    assert!(
        (share - expected_share).abs() <= SHARE_TOLERANCE,
        "hot_spin share {share:.3}, expected {expected_share:.3} ± {SHARE_TOLERANCE}"
    );
    // Frames walk from the spinning function up through its caller.
    assert!(bundle.folded("cpu.folded").iter().any(|f| f.frames.windows(2).any(|w| w == ["hot_spin", "burn_until"])));
    // A sample whose user stack hashes to a slot that holds another stack, in the stack map and
    // again in its overflow map, loses that stack (counted, and still counted as a sample).
    let lost = summary["dropped"]["cpu_user_stack_errors"].as_u64().unwrap() as f64;
    assert!(lost <= samples * MAX_LOST_STACKS, "{lost} of {samples} samples lost their user stack");
    assert_eq!(summary["reason"]["kind"], "record");
}
