//! The CPython reader over garbage memory: `_PyRuntime`, the interpreter and thread lists,
//! frames, code objects, strings and location tables are whatever the fuzzer writes (the first
//! byte picks 3.11, 3.12, 3.13 or 3.14; seeds/python_memory/debug_offsets_3_13 and _3_14 start
//! with those versions' real `_Py_DebugOffsets`). It must neither panic nor run away: every list and walk is bounded.
#![no_main]

use autodump::runtimes::python::{line_of, CodeCache, PyRuntime, MAX_PY_FRAMES, MAX_THREADS};
use libfuzzer_sys::fuzz_target;

/// Where the image sits in the fake address space; `PyCode_Type` is said to be just after.
const BASE: u64 = 0x10_0000;

fuzz_target!(|data: &[u8]| {
    let Some((&pick, image)) = data.split_first() else { return };
    let _ = line_of(image, i32::from(pick), u64::from(pick));
    let minor = [11, 12, 13, 14][usize::from(pick) % 4];
    let Some(rt) = PyRuntime::over_image(BASE, image.to_vec(), minor, BASE + 8) else { return };
    if let Ok(threads) = rt.threads(&mut CodeCache::default()) {
        assert!(threads.len() <= MAX_THREADS * 64);
        assert!(threads.iter().all(|t| t.frames.len() <= MAX_PY_FRAMES));
    }
});
