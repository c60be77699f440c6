//! The Go runtime reader over garbage memory: the goroutine list, Ps, free lists, stacks and the
//! heap profile's bucket list are whatever the fuzzer writes (seeds/go_memory/two_goroutines is
//! a consistent image). It must neither panic nor run away: every list and walk is bounded.
#![no_main]

use autodump::runtimes::go::{
    heap::{MAX_BUCKETS, MAX_STACK},
    GoRuntime, MAX_DUMPED_GOROUTINES, MAX_FRAMES,
};
use libfuzzer_sys::fuzz_target;

/// Where the image sits in the fake address space.
const BASE: u64 = 0x10_0000;

fuzz_target!(|data: &[u8]| {
    let rt = GoRuntime::over_image(BASE, data.to_vec());
    let _ = rt.count();
    if let Ok(goroutines) = rt.goroutines() {
        assert!(goroutines.len() as u64 <= MAX_DUMPED_GOROUTINES);
        assert!(goroutines.iter().all(|g| g.frames.len() <= MAX_FRAMES));
    }
    if let Ok(heap) = rt.heap() {
        assert!(heap.records.len() <= MAX_BUCKETS);
        assert!(heap.records.iter().all(|r| r.stack.len() as u64 <= MAX_STACK));
    }
});
