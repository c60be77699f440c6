//! The heap reader over images laid out as the runtime lays out its buckets, and over garbage.

use super::*;

const BASE: u64 = 0x10_0000;

/// An image with the globals of `GoRuntime::over_image` and `buckets` (stack, active cycle,
/// pending cycle) linked from `runtime.mbuckets`, at 512 bytes and on, with records of four
/// words a cycle (Go before 1.26); each bucket's object size is its bytes over its count.
fn image(rate: u64, disabled: bool, cycle: u32, buckets: &[(&[u64], [u64; 4], [u64; 4])]) -> Vec<u8> {
    let mut bytes = vec![0u8; 512];
    let put = |bytes: &mut Vec<u8>, at: usize, v: u64| bytes[at..at + 8].copy_from_slice(&v.to_le_bytes());
    put(&mut bytes, 200, rate);
    bytes[208] = u8::from(disabled);
    bytes[216..220].copy_from_slice(&(cycle << 1).to_le_bytes());
    let mut previous_link = 192; // runtime.mbuckets, then each bucket's allnext
    for (stack, active, future) in buckets {
        let at = bytes.len();
        bytes.resize(at + 48 + 8 * stack.len() + 128, 0);
        put(&mut bytes, previous_link, BASE + at as u64);
        previous_link = at + 8;
        put(&mut bytes, at + 16, 1);
        let size = [active, future].iter().find(|c| c[0] > 0).map_or(0, |c| c[2] / c[0]);
        put(&mut bytes, at + 32, size);
        put(&mut bytes, at + 40, stack.len() as u64);
        for (i, pc) in stack.iter().enumerate() {
            put(&mut bytes, at + 48 + 8 * i, *pc);
        }
        let record = at + 48 + 8 * stack.len();
        for i in 0..4 {
            put(&mut bytes, record + 8 * i, active[i]);
            // `cycle % 3` is the pending future cycle.
            put(&mut bytes, record + 32 * (1 + (cycle as usize % 3)) + 8 * i, future[i]);
        }
    }
    bytes
}

#[test]
fn reads_buckets_as_memprofile_does() {
    let bytes = image(
        512 * 1024,
        false,
        4,
        &[
            (&[0x401000, 0x402000], [10, 4, 655_360, 262_144], [1, 0, 65_536, 0]),
            (&[0x403000], [2, 2, 100, 100], [0; 4]),
        ],
    );
    let rt = GoRuntime::over_image(BASE, bytes);
    assert_eq!(rt.heap_rate().unwrap(), Ok(512 * 1024));
    let heap = rt.heap().unwrap();
    assert_eq!(heap.garbage, 0);
    assert_eq!(heap.records.len(), 2);
    let first = &heap.records[0];
    assert_eq!(*first.stack, [0x401000, 0x402000]);
    // active plus the cycle a GC completed but has not flushed yet.
    assert_eq!(
        (first.alloc_objects, first.free_objects, first.alloc_bytes, first.free_bytes),
        (11, 4, 720_896, 262_144)
    );
}

#[test]
fn newer_records_hold_counts_and_the_object_size_gives_bytes() {
    // Go 1.26+: two words a cycle. Lay out a bucket of 65,536-byte objects by hand.
    let mut bytes = image(512 * 1024, false, 0, &[]);
    let at = bytes.len();
    bytes.resize(at + 48 + 8 + 64, 0);
    let put = |bytes: &mut Vec<u8>, at: usize, v: u64| bytes[at..at + 8].copy_from_slice(&v.to_le_bytes());
    put(&mut bytes, 192, BASE + at as u64);
    put(&mut bytes, at + 16, 1);
    put(&mut bytes, at + 32, 65_536);
    put(&mut bytes, at + 40, 1);
    put(&mut bytes, at + 48, 0x401000);
    put(&mut bytes, at + 56, 5); // active.allocs
    put(&mut bytes, at + 64, 2); // active.frees
    let mut rt = GoRuntime::over_image(BASE, bytes);
    rt.at.heap_cycle_words = 2;
    let heap = rt.heap().unwrap();
    let r = &heap.records[0];
    assert_eq!((r.alloc_objects, r.free_objects, r.alloc_bytes, r.free_bytes), (5, 2, 5 * 65_536, 2 * 65_536));
    assert_eq!(heap.garbage, 0);
}

#[test]
fn before_any_gc_every_cycle_counts() {
    // GOGC=off from the start: nothing in `active`; MemProfile adds up the future cycles.
    let bytes = image(512 * 1024, false, 0, &[(&[0x401000], [0; 4], [3, 1, 300, 100])]);
    let heap = GoRuntime::over_image(BASE, bytes).heap().unwrap();
    let r = &heap.records[0];
    assert_eq!((r.alloc_objects, r.free_objects, r.alloc_bytes, r.free_bytes), (3, 1, 300, 100));
}

#[test]
fn says_why_there_is_no_profile() {
    let off = GoRuntime::over_image(BASE, image(0, true, 0, &[]));
    assert_eq!(off.heap_rate().unwrap(), Err(HeapOff::DisabledByLinker));
    let zero = GoRuntime::over_image(BASE, image(0, false, 0, &[]));
    assert_eq!(zero.heap_rate().unwrap(), Err(HeapOff::RateZero));
    assert!(zero.heap().unwrap().records.is_empty());
}

#[test]
fn garbage_ends_the_walk_counted() {
    let mut bytes = image(1, false, 0, &[(&[1, 2], [1, 0, 8, 0], [0; 4]), (&[3], [1, 0, 8, 0], [0; 4])]);
    // The second bucket claims a million frames.
    let second = 512 + 48 + 16 + 128;
    bytes[second + 40..second + 48].copy_from_slice(&1_000_000u64.to_le_bytes());
    let heap = GoRuntime::over_image(BASE, bytes.clone()).heap().unwrap();
    assert_eq!((heap.records.len(), heap.garbage), (1, 1));
    // A list that loops back on itself stops at the bucket bound, not never.
    bytes[second + 8..second + 16].copy_from_slice(&(BASE + second as u64).to_le_bytes());
    bytes[second + 40..second + 48].copy_from_slice(&1u64.to_le_bytes());
    let heap = GoRuntime::over_image(BASE, bytes).heap().unwrap();
    assert_eq!(heap.records.len(), MAX_BUCKETS);
}

#[test]
fn unsamples_as_runtime_pprof() {
    // One 64 KiB object at the default rate: sampled with probability 1 - e^(-1/8).
    let (count, bytes) = unsample(1, 65_536, 512 * 1024);
    assert_eq!((count, bytes), (8, 557_738));
    assert_eq!(unsample(0, 10, 512), (0, 0));
    assert_eq!(unsample(3, 30, 1), (3, 30));
}
