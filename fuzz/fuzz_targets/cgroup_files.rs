//! /proc/PID/cgroup, cgroup limit files (memory.max, memory.limit_in_bytes) and /proc/meminfo.
#![no_main]

use autodump::collect::cgroup::{parse_limit, parse_mem_total, parse_proc_cgroup};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = parse_proc_cgroup(&text);
    let _ = parse_limit(&text);
    let _ = parse_mem_total(&text);
});
