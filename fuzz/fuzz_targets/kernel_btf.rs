//! The kernel's BTF (/sys/kernel/btf/vmlinux or --btf FILE), read by our own bounded parser.
#![no_main]

use autodump::probes::btf::field_offset;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for (strukt, field) in [("task_struct", "pid"), ("task_struct", "tgid"), ("a", "b")] {
        let _ = field_offset(data, strukt, field);
    }
});
