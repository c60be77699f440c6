//! The CRuby reader over garbage memory: the VM, its threads' ring, execution contexts, control
//! frames, iseqs, strings, arrays, line tables and the symbol table are whatever the fuzzer
//! writes (the first byte picks 3.1's layout or 3.3's). It must neither panic nor run away: every
//! list and walk is bounded.
#![no_main]

use autodump::runtimes::ruby::{
    lines::line_of,
    reader::{NameCache, RubyRuntime, MAX_FRAMES, MAX_THREADS},
};
use libfuzzer_sys::fuzz_target;

/// Where the image sits in the fake address space; the VM pointer is its first word, the symbol
/// table at its second.
const BASE: u64 = 0x10_0000;

fuzz_target!(|data: &[u8]| {
    let Some((&pick, image)) = data.split_first() else { return };
    let _ = line_of(image, u64::from(pick), u64::from(pick), Some(image), u64::from(pick) << 8);
    let minor = [1, 3][usize::from(pick) % 2];
    let Some(rt) = RubyRuntime::over_image(BASE, image.to_vec(), minor) else { return };
    let mut cache = NameCache::default();
    if let Ok(threads) = rt.threads(&mut cache) {
        assert!(threads.len() <= MAX_THREADS);
        assert!(threads.iter().all(|t| t.frames.len() <= MAX_FRAMES));
    }
});
