//! The compiler of unwind rows over garbage: the ELF headers, `.eh_frame` or `.debug_frame`,
//! its CIEs, FDEs, CFA programs and expressions are whatever the fuzzer writes (seeds/unwind_rows
//! holds a small real executable). It must neither panic nor run away, and what it returns must
//! be what the probes' binary search assumes: rows strictly sorted by address.
#![no_main]

use autodump::unwind::rows::{compile, MAX_ROWS_PER_FILE};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(compiled) = compile(data) else { return };
    assert!(compiled.rows.len() <= MAX_ROWS_PER_FILE);
    assert!(compiled.rows.windows(2).all(|w| w[0].pc < w[1].pc), "rows out of order");
});
