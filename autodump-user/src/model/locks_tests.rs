//! The locks model on profiles built as the recorder builds them.

use std::sync::Arc;

use super::*;
use crate::{
    collect::maps::Mapping,
    record::{
        profile::{ProfileKind, SampleValue},
        wakeups::{add, Wake},
    },
    symbolize::Frame,
};

/// A user frame in `module`, with a line.
fn user(address: u64, function: &str, module: &str) -> Arc<Location> {
    let path = format!("/usr/lib/{module}").into();
    let mapping = Mapping { start: 0, end: u64::MAX, file_offset: 0, path, dev: 1, inode: 1 };
    let frame = Frame { function: function.into(), file: Some("/src/store.c".into()), line: Some(address as u32) };
    Arc::new(Location { address, kernel: false, mapping: Some(mapping), frames: [frame].into(), unnamed: None })
}

fn kernel(name: &str) -> Arc<Location> {
    let address = 0xffff_0000 + name.bytes().map(u64::from).sum::<u64>();
    crate::record::profile::tests::loc(address, name, true)
}

fn wake(profile: &mut Profile, thread: &str, futex: u64, holder: &str, ms: u64) {
    let blocked_user =
        vec![user(1, "__lll_lock_wait", "libc.so.6"), user(120, "put_entry", "app"), user(2, "main", "app")];
    let waker_user = vec![
        user(3, "__lll_lock_wake", "libc.so.6"),
        user(if holder == "flush_log" { 88 } else { 89 }, holder, "app"),
        user(4, "main", "app"),
    ];
    let wake = Wake {
        blocked_user: Some(blocked_user),
        blocked_kernel: Some(vec![kernel("schedule"), kernel("futex_wait")]),
        futex,
        waker: "[waker app]".into(),
        waker_user: Some(waker_user),
        waker_kernel: Some(vec![kernel("try_to_wake_up"), kernel("futex_wake")]),
    };
    add(profile, thread.into(), wake, SampleValue { count: 1, nanos: ms * 1_000_000, ..Default::default() });
}

#[test]
fn waits_are_grouped_by_futex_and_named_by_the_code_on_each_side() {
    let mut profile = Profile::new(ProfileKind::WAKEUPS);
    wake(&mut profile, "reader-1", 0x55a8, "flush_log", 60);
    wake(&mut profile, "reader-2", 0x55ac, "flush_log", 30);
    wake(&mut profile, "reader-2", 0x55a8, "put_entry", 10);
    wake(&mut profile, "other", 0x77b8, "flush_log", 5);
    // Not a futex wait (a pipe, a sleep): no lock.
    wake(&mut profile, "sleeper", 0, "flush_log", 500);
    let locks = locks(&profile, &[], 1.0);
    assert_eq!(locks.len(), 2);
    let store = &locks[0];
    assert_eq!((store.address.as_str(), store.wait_us, store.waits), ("55a8", 100_000, 3));
    // The program's innermost function, past libc's locking, with its line.
    assert_eq!(store.taken_in, "put_entry (store.c:120)");
    let released: Vec<(&str, u64)> = store.released_by.iter().map(|s| (s.name.as_str(), s.wait_us)).collect();
    assert_eq!(released, [("flush_log (store.c:88)", 90_000), ("put_entry (store.c:89)", 10_000)]);
    let waiters: Vec<&str> = store.waiters.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(waiters, ["reader-1", "reader-2"]);
    assert_eq!(store.blocked_stacks[0].name, "main;put_entry;__lll_lock_wait;futex_wait_[k];schedule_[k]");
    assert_eq!(store.waker_stacks[0].name, "main;flush_log;__lll_lock_wake;futex_wake_[k];try_to_wake_up_[k]");
    assert_eq!(locks[1].address, "77b8");
}

#[test]
fn where_a_runtime_named_frames_only_the_programs_threads_waits_count() {
    use autodump_common::runtimes::{kind, runtime_frame};
    let mut profile = Profile::new(ProfileKind::WAKEUPS);
    let java = crate::record::profile::tests::loc(runtime_frame(kind::HOTSPOT, 7), "Chain.enter", false);
    let mut wake = |blocked: Vec<Arc<Location>>, futex, us: u64| {
        let wake = Wake {
            blocked_user: Some(blocked),
            blocked_kernel: Some(vec![kernel("schedule")]),
            futex,
            waker: "[waker java]".into(),
            waker_user: Some(vec![user(88, "Chain.hold", "app")]),
            waker_kernel: Some(vec![kernel("futex_wake")]),
        };
        add(&mut profile, "t".into(), wake, SampleValue { count: 1, nanos: us * 1000, ..Default::default() });
    };
    wake(vec![user(1, "__lll_lock_wait", "libc.so.6"), java], 0x10, 5);
    // A compiler thread waiting on the VM's own monitor: no Java frame under it.
    wake(vec![user(2, "PlatformMonitor::wait", "libjvm.so")], 0x20, 50);
    let found = locks(&profile, &[], 1.0);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].address, "10");
    let mut profiles = crate::record::Profiles::new();
    profiles.insert(profile);
    assert_eq!(lock_wait_ns(&profiles), 5000);
}

#[test]
fn a_named_locks_timeouts_are_its_holders() {
    let s = |x: &str| Some(x.to_string());
    let by_site = HashMap::from([
        ((s("io_loop"), s("[timer]")), 90),
        ((s("io_loop"), s("cpu_heavy")), 10),
        ((s("cpu_heavy"), s("io_loop")), 5),
        ((s("lonely"), s("[timer]")), 7),
    ]);
    let released = held_through_timeouts(&by_site);
    assert_eq!(released, HashMap::from([(s("cpu_heavy"), 100), (s("io_loop"), 5), (s("[timer]"), 7)]));
}

#[test]
fn a_waker_with_no_code_of_the_program_is_named_by_its_label_and_timeouts_are_apart() {
    let mut profile = Profile::new(ProfileKind::WAKEUPS);
    let mut wake = |futex, waker: &str, nanos| {
        let wake = Wake {
            blocked_user: Some(vec![user(120, "put_entry", "app")]),
            blocked_kernel: Some(vec![kernel("schedule")]),
            futex,
            waker: waker.into(),
            waker_user: Some(Vec::new()),
            waker_kernel: Some(vec![kernel("futex_wake")]),
        };
        add(&mut profile, "t".into(), wake, SampleValue { count: 1, nanos, ..Default::default() });
    };
    wake(0x10, "[waker other (pid 9)]", 3000);
    wake(0x10, "[timer]", 1000);
    // Only ever ended by its timeout: a timed sleep, not a lock.
    wake(0x20, "[timer]", 5000);
    let found = locks(&profile, &[], 1.0);
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].released_by[0].name, "[waker other (pid 9)]");
    assert_eq!((found[0].wait_us, found[0].timed_out_us), (4, 1));
    let mut profiles = crate::record::Profiles::new();
    profiles.insert(profile);
    assert_eq!(lock_wait_ns(&profiles), 3000, "waits a thread released");
}
