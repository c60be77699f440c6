//! autodump's kernel side: count on-CPU samples, off-CPU time and page faults of one process per
//! stack.
//!
//! Small on purpose: filter by tgid, build a key, take stack ids, add to a counter. Everything
//! else (draining, symbolizing, formatting) happens in the agent. Every event that cannot be
//! recorded is counted in `STATS`. Each mechanism has its own module; this file only wires them.
#![no_std]
#![no_main]
// The BPF target has no `AtomicU64::fetch_add` (no CAS before v3); the intrinsic lowers to BPF_XADD.
#![allow(internal_features)]
#![feature(core_intrinsics)]

mod config;
mod exit;
mod faults;
mod futex;
mod maps;
mod runtimes;
mod sampling;
mod stacks;
mod switch;
mod tasks;
mod unwind;
mod wakeup;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[link_section = "license"]
#[no_mangle]
static LICENSE: [u8; 4] = *b"GPL\0";
