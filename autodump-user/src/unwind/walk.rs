//! The CFI walk in the agent: a user stack walked from registers the kernel shows outside the
//! thread (`/proc/PID/task/TID/syscall` gives a blocked thread's stack pointer and PC), with
//! the same rows and mapping table the probes walk with, over memory read with
//! `process_vm_readv`. For threads that blocked before the probes were attached: they never
//! switch, so the probes never walk them.

use autodump_common::{
    unwind::{cfa, MappingEntry, UnwindRow, RBP_UNCHANGED},
    MAX_STACK_DEPTH,
};

use super::row_store::RowStore;
use crate::collect::remote::RemoteMemory;

/// Offsets from RSP in `__restore_rt` of the interrupted RBP, RSP and RIP (see the probes).
const SIGFRAME_BP: u64 = 40 + 10 * 8;
const SIGFRAME_SP: u64 = 40 + 15 * 8;
const SIGFRAME_IP: u64 = 40 + 16 * 8;

/// Registers a walk starts from; RBP is not known from outside, until a frame restores it.
#[derive(Clone, Copy, Debug)]
pub struct Regs {
    pub pc: u64,
    pub sp: u64,
    pub bp: Option<u64>,
}

/// The return addresses of the stack at `regs`, innermost first (the PC itself first). A rule
/// that needs what is not known (RBP before any frame restored it) or not readable ends it.
pub fn walk(mappings: &[MappingEntry], store: &RowStore, regs: Regs, mem: &dyn RemoteMemory) -> Vec<u64> {
    let mut ips = Vec::new();
    let (mut pc, mut sp, mut bp) = (regs.pc, regs.sp, regs.bp);
    let mut exact = true;
    while ips.len() < MAX_STACK_DEPTH && pc != 0 {
        ips.push(pc);
        let lookup = if exact { pc } else { pc.wrapping_sub(1) };
        let Some(mapping) = mappings.iter().find(|m| m.start <= lookup && lookup < m.end) else { break };
        let row = match store.rows(mapping.row_start, mapping.row_count) {
            Some(rows) if mapping.row_count > 0 => row_at(rows, lookup.wrapping_sub(mapping.bias)),
            _ => None,
        };
        let row = row.unwrap_or(UnwindRow { cfa_kind: cfa::NONE, ..UnwindRow::default() });
        exact = false;
        let word = |addr: u64| mem.u64(addr).ok();
        let offset = |base: u64| base.wrapping_add(row.cfa_offset as i64 as u64);
        let frame = match row.cfa_kind {
            cfa::RSP => Some(offset(sp)),
            cfa::RBP => bp.map(offset),
            cfa::PLT => Some(sp + 8 + if pc & 15 >= row.cfa_offset as u64 { 8 } else { 0 }),
            cfa::DEREF_RBP => bp.and_then(|bp| word(offset(bp))),
            cfa::SIGNAL => {
                let (Some(b), Some(s), Some(i)) =
                    (word(sp + SIGFRAME_BP), word(sp + SIGFRAME_SP), word(sp + SIGFRAME_IP))
                else {
                    break;
                };
                (bp, sp, pc, exact) = (Some(b), s, i, true);
                continue;
            }
            cfa::NONE => {
                // The frame-pointer chain: [rbp] the caller's RBP, [rbp + 8] its return address.
                let Some(frame_bp) = bp.filter(|&b| b != 0) else { break };
                let (Some(caller_bp), Some(ra)) = (word(frame_bp), word(frame_bp + 8)) else { break };
                (bp, sp, pc) = (Some(caller_bp), frame_bp + 16, ra);
                continue;
            }
            // The root, or what the agent's walk does not follow (JIT frames).
            _ => None,
        };
        let Some(cfa) = frame.filter(|&cfa| cfa > sp) else { break };
        let Some(ra) = word(cfa - 8) else { break };
        if row.rbp_offset != RBP_UNCHANGED {
            bp = word(cfa.wrapping_add(row.rbp_offset as i64 as u64));
        }
        (sp, pc) = (cfa, ra);
    }
    ips
}

/// The last row at or below `address` (a file address), if the file's rows cover it.
fn row_at(rows: &[UnwindRow], address: u64) -> Option<UnwindRow> {
    let address = u32::try_from(address).ok()?;
    let i = rows.partition_point(|r| r.pc <= address).checked_sub(1)?;
    Some(rows[i])
}
