//! The kernel's BTF (/sys/kernel/btf/vmlinux or --btf FILE), read by our own bounded parser:
//! field offsets, tracepoint argument counts, enum values, and the feature decisions made of them.
#![no_main]

use autodump::probes::{btf::Btf, features::KernelFeatures};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(btf) = Btf::parse(data) else { return };
    for (strukt, field) in [("task_struct", "pid"), ("task_struct", "tgid"), ("a", "b")] {
        let _ = btf.field_offset(strukt, field);
    }
    let _ = btf.tracepoint_args("sched_switch");
    let _ = btf.enum_has("bpf_func_id", "BPF_FUNC_loop");
    let _ = KernelFeatures::decide(&btf);
});
