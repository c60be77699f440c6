//! Go's `.gopclntab` reader over garbage: the header, function table, pc-value tables, file
//! and name tables and inlining trees are whatever the fuzzer writes (seeds/go_pclntab holds
//! the start of a real table). It must neither panic nor run away.
#![no_main]

use autodump::runtimes::go::gopclntab::Pclntab;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The file is the table; virtual addresses are file offsets; go:func.* sits mid-file.
    let Some(table) = Pclntab::parse(data, 0, Some(data.len() / 2)) else { return };
    let identity = |va: u64| usize::try_from(va).ok().filter(|&o| o < data.len());
    for pc in [0, 1, 0x20, 0x1000, 0x40_1000, 0x40_1005, u64::MAX] {
        let _ = table.frames(data, table.text_start.wrapping_add(pc), identity);
        let _ = table.frames(data, pc, identity);
    }
    for (entry, _) in table.functions(data).take(64) {
        let _ = table.frames(data, entry.wrapping_add(3), identity);
    }
});
