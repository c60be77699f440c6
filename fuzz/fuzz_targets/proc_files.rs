//! /proc/PID/stat, statm, maps, status and limits as a hostile kernel
//! (or a process renaming itself) could write them.
#![no_main]

use autodump::{
    collect::{
        maps::MemoryMap,
        metrics::{parse_open_files_limit, parse_statm_rss},
        process::parse_stat,
    },
    probes::privilege::parse_cap_eff,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = parse_stat(&text);
    let _ = parse_cap_eff(&text);
    let _ = parse_open_files_limit(&text);
    let _ = parse_statm_rss(&text, 4096);
    let map = MemoryMap::parse(&text);
    // Every mapping found for an address must contain it.
    for addr in [0, 0x1000, 0x40_0000, 0x7fff_ffff_f000, u64::MAX] {
        if let Some(m) = map.find(addr) {
            assert!(m.start <= addr && addr < m.end, "{m:?} does not contain {addr:#x}");
        }
    }
});
