//! Frames of a fixed size with no CFI (a JIT's compiled methods): the caller's stack pointer is
//! RSP plus the frame's size, except while the frame is set up or torn down. A return address
//! is never there, but an interrupted PC (the innermost frame) may be: its instruction says
//! where the return address is then. x86_64, as HotSpot's compilers begin and end a method: an
//! inline-cache check, a stack bang (`mov [rsp - n], eax`), `push rbp`, (`mov rbp, rsp`),
//! `sub rsp, n`, (an entry barrier: `cmp [r15 + d], imm`); then `add rsp, n`, `pop rbp`, a
//! return poll (`cmp rsp, [r15 + d]`, `ja`), `ret`.

use aya_ebpf::helpers::bpf_probe_read_user;

/// The CFA's offset from RSP, and whether the caller's RBP is saved at CFA - 16.
pub(super) type Cfa = (i64, bool);

/// Nothing pushed yet, or everything popped: the return address is on top.
const BARE: Cfa = (8, false);
/// `push rbp` done.
const PUSHED: Cfa = (16, true);

/// Where the CFA is for a frame of `size` bytes interrupted at `ip` (`interrupted`: not a
/// return address), in its body or epilogue.
#[inline(always)]
pub(super) fn body(ip: u64, size: i32, interrupted: bool) -> Cfa {
    let whole = (size as i64, true);
    let Some(code) = code_at(ip, interrupted) else { return whole };
    match code {
        // ret; a return poll (`cmp rsp, [r15 + disp]`), or its `ja` right before a `ret`.
        [0xc3, ..] | [0x49, 0x3b, 0x67 | 0xa7, ..] | [0x0f, 0x87, _, _, _, _, 0xc3, _] | [0x77, _, 0xc3, ..] => BARE,
        [0x5d, ..] => PUSHED,
        // add rsp, n: the frame's locals are still below.
        [0x48, 0x83, 0xc4, n, ..] => (n as i8 as i64 + 16, true),
        [0x48, 0x81, 0xc4, a, b, c, d, _] => (i32::from_le_bytes([a, b, c, d]) as i64 + 16, true),
        _ => whole,
    }
}

/// Where the CFA is for a frame of `size` bytes interrupted at `ip` before its frame is
/// complete; None for a return address (never in a prologue: the walk stops there).
#[inline(always)]
pub(super) fn prologue(ip: u64, size: i32, interrupted: bool) -> Option<Cfa> {
    let code = code_at(ip, interrupted)?;
    Some(match code {
        // mov rbp, rsp; sub rsp, n: RBP pushed.
        [0x48, 0x8b, 0xec, ..] | [0x48, 0x89, 0xe5, ..] | [0x48, 0x83 | 0x81, 0xec, ..] => PUSHED,
        // An entry barrier (`cmp dword [r15 + d], imm`), after the frame is allocated.
        [0x41, 0x81, 0x7f | 0xbf, ..] => (size as i64, true),
        // Its `jne` to the slow path, unless it is the inline-cache check's (a nop or the stack
        // bang follows that).
        [0x0f, 0x85, _, _, _, _, next, _] if next != 0x66 && next != 0x0f && next != 0x90 && next != 0x89 => {
            (size as i64, true)
        }
        // The inline-cache check, the stack bang, `push rbp` itself: nothing pushed yet.
        _ => BARE,
    })
}

#[inline(always)]
fn code_at(ip: u64, interrupted: bool) -> Option<[u8; 8]> {
    if !interrupted {
        return None;
    }
    // SAFETY: bpf_probe_read_user checks the address; a fault is an error, not a crash.
    unsafe { bpf_probe_read_user(ip as *const [u8; 8]) }.ok()
}
