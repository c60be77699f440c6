//! A bundle's one-line verdict, written from its own figures: what fired, the function most of
//! the CPU was in, the function the threads waited in most, and what memory grew. It heads
//! `index.html` and `summary.json`, and is an alert's summary.
//! "cpu 93% of 1.6 CPUs for 40 s; 71% of on-CPU in main.newPublisherPerMessage".

use std::collections::HashMap;

use super::{frames::runtime_frame, reports::Reason};
use crate::{
    collect::{capacity::CpuCapacity, memory::MemoryReport},
    probes::targets::ExitStatus,
    record::profile::Profile,
};

/// A function is named in the verdict when it holds at least this share of its profile.
pub const NAMED_SHARE: f64 = 0.10;

/// What the verdict is written from.
pub struct VerdictFacts<'a> {
    pub reason: &'a Reason,
    pub capacity: Option<&'a CpuCapacity>,
    pub exit: Option<&'a ExitStatus>,
    pub cpu: &'a Profile,
    pub offcpu: &'a Profile,
    /// Where the program waits, when its runtime says (Go's goroutines): said instead of the
    /// threads' off-CPU time.
    pub wait: Option<String>,
    /// Frames at the root of off-CPU stacks of threads a runtime parked idle (not waiting for
    /// the program).
    pub idle_frames: Vec<&'static str>,
    /// The lock threads waited on longest (from the wake-up probe): said instead of the
    /// function they waited in when it holds at least as much of the off-CPU time.
    pub lock: Option<&'a super::locks::LockReport>,
    /// A deadlock among the threads blocked at the end: said first.
    pub deadlock: Option<&'a super::hangs::Deadlock>,
    pub memory: Option<&'a MemoryReport>,
    pub duration_s: f64,
}

pub fn verdict(f: &VerdictFacts<'_>) -> String {
    let mut parts = vec![what_fired(f)];
    if let Some(deadlock) = f.deadlock {
        parts.push(format!("deadlock: {}", deadlock.describe()));
    }
    if let Some((name, share)) = top_leaf(f.cpu, &[], Threads::All, |v| v.count) {
        parts.push(format!("{:.0}% of on-CPU in {name}", share * 100.0));
    }
    // Where a runtime says the program waits (Go's goroutines); else where its threads do.
    match &f.wait {
        Some(wait) => parts.push(wait.clone()),
        None => {
            let (by_leaf, total) = leaves(f.offcpu, &f.idle_frames, Threads::Program, |v| v.nanos);
            let leaf = top(by_leaf, total);
            let lock = f.lock.map(|l| (l, l.wait_us as f64 * 1e3 / total.max(1) as f64)).filter(|l| l.1 >= NAMED_SHARE);
            match (lock, leaf) {
                // A lock whose waits make up half of the top function's is what it waits for.
                (Some((lock, share)), leaf) if leaf.as_ref().is_none_or(|l| share >= l.1 / 2.0) => {
                    let released = lock.released_by.first().map(|r| format!(", released by {}", r.name));
                    let what = lock.name.map_or_else(|| format!("lock 0x{}", lock.address), str::to_string);
                    parts.push(format!(
                        "{:.0}% of the time off-CPU waiting on {what} taken in {}{}",
                        share.min(1.0) * 100.0,
                        lock.taken_in,
                        released.unwrap_or_default()
                    ));
                }
                (_, Some((name, share))) => {
                    parts.push(format!("{:.0}% of the time off-CPU waiting in {name}", share * 100.0))
                }
                _ => {}
            }
        }
    }
    if let Some(grown) = f.memory.and_then(|m| m.grown_mappings.first()).filter(|g| g.grown_bytes >= 1 << 20) {
        parts.push(format!("{} grew {}", grown.mapping, bytes(grown.grown_bytes as f64)));
    }
    parts.join("; ")
}

fn what_fired(f: &VerdictFacts<'_>) -> String {
    let r = f.reason;
    match (r.kind.as_str(), r.metric.as_deref(), r.value) {
        ("rule", Some(metric), Some(value)) => {
            let held = r.held_s.filter(|&h| h >= 1.0).map(|h| format!(" for {h:.0} s")).unwrap_or_default();
            let value = match (metric, f.capacity) {
                ("cpu", Some(c)) => format!("{value:.0}% of {} CPUs", trim(c.cores)),
                ("cpu", None) => format!("{value:.0}%"),
                ("rss", _) => bytes(value),
                ("lock_wait", _) => format!("{value:.1} s of lock wait per s"),
                _ => format!("{value:.0}"),
            };
            format!("{metric} {value}{held}")
        }
        ("exit", ..) => match f.exit {
            Some(ExitStatus { signal: Some(signal), .. }) => format!("killed by signal {signal}"),
            Some(ExitStatus { code: Some(code), .. }) => format!("exited with code {code}"),
            _ => "exited".into(),
        },
        ("alert", ..) => format!("alert {} firing", r.alert.as_ref().map_or("?", |a| a.name.as_str())),
        ("record", ..) => format!("recorded {:.0} s", f.duration_s),
        (kind, ..) => format!("{kind} bundle"),
    }
}

/// Which threads' stacks a part of the verdict is read from.
#[derive(Clone, Copy, PartialEq)]
enum Threads {
    /// Every thread's: a runtime's own threads' CPU (its garbage collector's) is the process's.
    All,
    /// Where a runtime names frames, the threads that run the program's code: a runtime's own
    /// threads (a JVM's collector and compiler threads, idle between tasks) do not wait for it.
    Program,
}

/// The innermost user function holding most of `profile`'s `weight` (the innermost a runtime
/// named, in a stack that has one), and its share, if it holds at least `NAMED_SHARE`. Threads a runtime parked idle (their stack's root is one of
/// `idle_frames`) are not waiting for the program.
fn top_leaf(
    profile: &Profile,
    idle_frames: &[&str],
    threads: Threads,
    weight: impl Fn(&crate::record::profile::SampleValue) -> u64,
) -> Option<(String, f64)> {
    let (by_leaf, total) = leaves(profile, idle_frames, threads, weight);
    top(by_leaf, total)
}

/// The function with the most of `total` in `by_leaf`, and its share, if at least `NAMED_SHARE`.
fn top(by_leaf: HashMap<&str, u64>, total: u64) -> Option<(String, f64)> {
    let (name, w) = by_leaf.into_iter().max_by(|a, b| a.1.cmp(&b.1).then_with(|| b.0.cmp(a.0)))?;
    let share = w as f64 / total.max(1) as f64;
    (share >= NAMED_SHARE).then(|| (name.to_string(), share))
}

/// `weight` by the innermost user function of each counted stack (see `top_leaf`), and the
/// counted total.
fn leaves<'a>(
    profile: &'a Profile,
    idle_frames: &[&str],
    threads: Threads,
    weight: impl Fn(&crate::record::profile::SampleValue) -> u64,
) -> (HashMap<&'a str, u64>, u64) {
    let mut by_leaf: HashMap<&str, u64> = HashMap::new();
    let mut total = 0u64;
    let idle = |i: &u32| {
        let location = &profile.locations[*i as usize];
        location.address == 0 && location.frames.first().is_some_and(|f| idle_frames.contains(&&*f.function))
    };
    let runs_program = |stack: &[u32]| stack.iter().any(|&i| runtime_frame(&profile.locations[i as usize]));
    let program_only = threads == Threads::Program && profile.samples.keys().any(|k| runs_program(&k.stack));
    let counted = |k: &&crate::record::profile::SampleKey| {
        !k.stack.last().is_some_and(idle) && (!program_only || runs_program(&k.stack))
    };
    for (key, value) in profile.samples.iter().filter(|(k, _)| counted(k)) {
        let w = weight(value);
        total += w;
        let stack = || key.stack.iter().map(|&i| &profile.locations[i as usize]);
        let leaf = stack().find(|l| runtime_frame(l)).or_else(|| stack().find(|l| !l.kernel && l.address != 0));
        if let Some(frame) = leaf.and_then(|l| l.frames.first()) {
            *by_leaf.entry(&frame.function).or_default() += w;
        }
    }
    (by_leaf, total)
}

fn trim(v: f64) -> String {
    let s = format!("{v:.2}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

fn bytes(v: f64) -> String {
    match v {
        v if v >= (1u64 << 30) as f64 => format!("{} GiB", trim(v / (1u64 << 30) as f64)),
        v if v >= (1u64 << 20) as f64 => format!("{:.0} MiB", v / (1u64 << 20) as f64),
        v => format!("{:.0} KiB", v / 1024.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        collect::{capacity::CapacitySource, memory::MappingGrowth},
        record::profile::{tests::loc, ProfileKind, SampleValue, StackPart},
    };
    use autodump_common::runtimes::{kind, runtime_frame};

    fn profile(kind: ProfileKind, stacks: &[(&str, u64)]) -> Profile {
        let mut p = Profile::new(kind);
        for (i, (leaf, w)) in stacks.iter().enumerate() {
            let user = [loc(100 + i as u64, leaf, false), loc(1, "main", false)];
            let kernel = [loc(0xffff_0000, "do_syscall_64", true)];
            let value = SampleValue { count: *w, nanos: *w * 1000, ..Default::default() };
            p.add("t".into(), &[StackPart::Kernel(&kernel), StackPart::User(&user)], value);
        }
        p
    }

    #[test]
    fn says_what_fired_where_the_cpu_went_what_waited_and_what_grew() {
        let mut reason = Reason::of_kind("rule");
        (reason.metric, reason.value, reason.held_s) = (Some("cpu".into()), Some(93.4), Some(40.2));
        let capacity = CpuCapacity { cores: 1.6, source: CapacitySource::CgroupQuota };
        let cpu = profile(ProfileKind::CPU, &[("main.newPublisherPerMessage", 71), ("runtime.mallocgc", 29)]);
        let offcpu = profile(ProfileKind::OFF_CPU, &[("pthread_cond_wait", 8), ("read", 2)]);
        let memory = MemoryReport {
            grown_mappings: vec![MappingGrowth {
                mapping: "[heap]".into(),
                mappings: 1,
                rss_start_bytes: 0,
                rss_end_bytes: 3 << 30,
                grown_bytes: 3 << 29,
            }],
            ..Default::default()
        };
        let facts = VerdictFacts {
            reason: &reason,
            capacity: Some(&capacity),
            exit: None,
            cpu: &cpu,
            offcpu: &offcpu,
            wait: None,
            idle_frames: Vec::new(),
            lock: None,
            deadlock: None,
            memory: Some(&memory),
            duration_s: 50.0,
        };
        assert_eq!(
            verdict(&facts),
            "cpu 93% of 1.6 CPUs for 40 s; 71% of on-CPU in main.newPublisherPerMessage; \
             80% of the time off-CPU waiting in pthread_cond_wait; [heap] grew 1.5 GiB"
        );
        // A lock that holds as much of the off-CPU time as the top function is said instead.
        let share = |name: &str, wait_us| crate::model::locks::Share { name: name.into(), wait_us };
        let lock = crate::model::locks::LockReport {
            address: "55aa".into(),
            name: None,
            waiting_share: 0.9,
            taken_in: "put_entry (store.c:120)".into(),
            wait_us: 9,
            waits: 3,
            waiters: vec![share("reader", 9)],
            released_by: vec![share("flush_log (log.c:88)", 9)],
            timed_out_us: 0,
            blocked_stacks: Vec::new(),
            waker_stacks: Vec::new(),
        };
        let with_lock = VerdictFacts { lock: Some(&lock), memory: None, ..facts };
        assert_eq!(
            verdict(&with_lock),
            "cpu 93% of 1.6 CPUs for 40 s; 71% of on-CPU in main.newPublisherPerMessage; \
             90% of the time off-CPU waiting on lock 0x55aa taken in put_entry (store.c:120), \
             released by flush_log (log.c:88)"
        );
        let small = crate::model::locks::LockReport { wait_us: 3, ..lock.clone() };
        assert!(verdict(&VerdictFacts { lock: Some(&small), ..with_lock }).contains("waiting in pthread_cond_wait"));
    }

    #[test]
    fn an_exit_and_an_idle_process_read_plainly() {
        let reason = Reason::of_kind("exit");
        let exit = ExitStatus { code: None, signal: Some(11), core_dumped: false };
        let empty = Profile::new(ProfileKind::CPU);
        let spread = profile(ProfileKind::CPU, &(0..20).map(|_| ("f", 1)).collect::<Vec<_>>());
        let facts = VerdictFacts {
            reason: &reason,
            capacity: None,
            exit: Some(&exit),
            cpu: &empty,
            offcpu: &empty,
            wait: None,
            idle_frames: Vec::new(),
            lock: None,
            deadlock: None,
            memory: None,
            duration_s: 30.0,
        };
        assert_eq!(verdict(&facts), "killed by signal 11");
        assert_eq!(
            top_leaf(&spread, &[], Threads::All, |v| v.count).map(|t| t.0),
            Some("f".into()),
            "one leaf adds up"
        );
    }

    #[test]
    fn a_runtimes_process_is_named_by_its_own_functions_not_the_interpreters() {
        // Python's frames above the interpreter's native ones, whose addresses differ (and go
        // unnamed where the interpreter is stripped); a C program's stacks as before.
        let mut cpu = Profile::new(ProfileKind::CPU);
        let mut offcpu = Profile::new(ProfileKind::OFF_CPU);
        let python = |f: &str, payload: u64| loc(runtime_frame(kind::PYTHON, payload), f, false);
        for i in 0..10u64 {
            let user = [loc(0x1000 + i, &format!("python3.13+0x{:x}", 0x1000 + i), false), python("render", 7)];
            cpu.add("t".into(), &[StackPart::User(&user)], SampleValue { count: 1, ..Default::default() });
            let user = [loc(0x2000, "__futex_abstimed_wait_common", false), loc(0x3000 + i, "?", false)];
            let user = [&user[..], &[python("Parameter.__init__", 9)]].concat();
            offcpu.add("t".into(), &[StackPart::User(&user)], SampleValue { nanos: 5, ..Default::default() });
        }
        // A runtime's own thread, idle with no frame of the program's: not what the program
        // waits for, though it waited longest; its CPU counts.
        let vm = [loc(0x2000, "__futex_abstimed_wait_common", false), loc(0x4000, "WorkerThread::run", false)];
        offcpu.add("gc".into(), &[StackPart::User(&vm)], SampleValue { nanos: 500, ..Default::default() });
        cpu.add("gc".into(), &[StackPart::User(&vm)], SampleValue { count: 5, ..Default::default() });
        assert_eq!(top_leaf(&cpu, &[], Threads::All, |v| v.count), Some(("render".into(), 10.0 / 15.0)));
        assert_eq!(top_leaf(&offcpu, &[], Threads::Program, |v| v.nanos), Some(("Parameter.__init__".into(), 1.0)));
        let native = profile(ProfileKind::CPU, &[("put_entry", 3)]);
        assert_eq!(top_leaf(&native, &[], Threads::Program, |v| v.count), Some(("put_entry".into(), 1.0)));
    }

    #[test]
    fn a_runtimes_wait_is_said_and_its_idle_threads_are_not() {
        let reason = Reason::of_kind("manual");
        let cpu = Profile::new(ProfileKind::CPU);
        let mut offcpu = Profile::new(ProfileKind::OFF_CPU);
        let parked = [loc(1, "runtime.notesleep", false), loc(2, "runtime.mPark", false)];
        let idle = SampleValue { count: 1, nanos: 9_000_000_000, ..Default::default() };
        offcpu.add("t".into(), &[StackPart::User(&parked), StackPart::Pseudo("[parked]")], idle);
        let facts = VerdictFacts {
            reason: &reason,
            capacity: None,
            exit: None,
            cpu: &cpu,
            offcpu: &offcpu,
            wait: Some("60% of goroutine time waiting on [sync.Mutex.Lock] in main.holdLock".into()),
            idle_frames: vec!["[parked]"],
            lock: None,
            deadlock: None,
            memory: None,
            duration_s: 30.0,
        };
        assert_eq!(
            verdict(&facts),
            "manual bundle; 60% of goroutine time waiting on [sync.Mutex.Lock] in main.holdLock"
        );
        // Without the runtime's word, its idle threads still name nothing.
        assert_eq!(verdict(&VerdictFacts { wait: None, ..facts }), "manual bundle");
    }
}
