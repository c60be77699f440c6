//! The perf-map reader over garbage: whatever a JIT runtime (or a hostile target) writes into
//! `/tmp/perf-PID.map`, fed in pieces as the file would grow. It must neither panic nor grow past
//! its bound, and every name it gives must cover the address asked.
#![no_main]

use std::path::PathBuf;

use autodump::runtimes::perfmap::map::PerfMap;
use libfuzzer_sys::fuzz_target;

/// A small bound, so that eviction runs on the fuzzer's inputs.
const MAX_BYTES: usize = 4096;

fuzz_target!(|data: &[u8]| {
    let Some((&split, text)) = data.split_first() else { return };
    let mut map = PerfMap::at(PathBuf::from("/nonexistent"), 0, MAX_BYTES);
    let cut = usize::from(split).min(text.len());
    map.take(&text[..cut]);
    map.take(&text[cut..]);
    map.take(b"\n");
    assert!(map.len() * 96 <= MAX_BYTES);
    for chunk in text.chunks(8) {
        let mut word = [0u8; 8];
        word[..chunk.len()].copy_from_slice(chunk);
        let _ = map.name(u64::from_le_bytes(word));
    }
    assert!(map.stats.malformed <= map.stats.lines);
});
