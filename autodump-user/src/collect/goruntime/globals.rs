//! The runtime's globals in a Go binary without a symbol table (`-ldflags=-s`), found where the
//! runtime's own functions use them. `.gopclntab` names every function even when `.symtab` is
//! gone, and the instructions of a few small, stable runtime functions address the globals
//! RIP-relative: the first such load in `runtime.forEachGRace` is `allglen`, in
//! `runtime.forEachG` it is `allgs`, in `runtime.gcMarkTinyAllocs` it is `allp`; the first
//! address `runtime.mcommoninit` takes is `&sched.lock`; `runtime.waitReason.String` takes the
//! address of `waitReasonStrings` after comparing the reason with its length. Checked against the
//! symbol table for Go 1.19 and today's Go (`tests` below). Any later global (the memory-profile
//! buckets) is found the same way: a function that uses it, and which of its references it is.

use iced_x86::{Decoder, DecoderOptions, Mnemonic, OpKind};

use super::GoError;
use crate::symbolize::go::GoBinary;

/// Link-time addresses of the runtime's globals, and the wait reasons' count.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Globals {
    pub allglen: u64,
    pub allgs: u64,
    pub allp: u64,
    /// `&sched.lock`: `sched` is this less the offset of `lock` in `schedt`.
    pub sched_lock: u64,
    pub wait_reasons: u64,
    pub wait_reasons_len: u64,
}

/// One instruction that addresses memory RIP-relative: its mnemonic and target.
struct Reference {
    mnemonic: Mnemonic,
    target: u64,
}

fn decode(go: &GoBinary, function: &'static str) -> Result<Vec<iced_x86::Instruction>, GoError> {
    let (start, code) = go.function_code(function).ok_or(GoError::NoSymbol(function))?;
    Ok(Decoder::with_ip(64, code, start, DecoderOptions::NONE).into_iter().collect())
}

fn references(instructions: &[iced_x86::Instruction]) -> Vec<Reference> {
    instructions
        .iter()
        .filter(|i| i.is_ip_rel_memory_operand())
        .map(|i| Reference { mnemonic: i.mnemonic(), target: i.ip_rel_memory_address() })
        .collect()
}

/// The target of the first `mnemonic` reference in `function`.
fn first(go: &GoBinary, function: &'static str, mnemonic: Mnemonic) -> Result<u64, GoError> {
    references(&decode(go, function)?)
        .iter()
        .find(|r| r.mnemonic == mnemonic)
        .map(|r| r.target)
        .ok_or(GoError::NoSymbol(function))
}

pub fn find(go: &GoBinary) -> Result<Globals, GoError> {
    let reasons = decode(go, "runtime.waitReason.String")?;
    // `if w >= waitReason(len(waitReasonStrings))`: a byte compared with the length.
    let wait_reasons_len = reasons
        .iter()
        .find(|i| {
            i.mnemonic() == Mnemonic::Cmp
                && i.op_count() == 2
                && matches!(i.op1_kind(), OpKind::Immediate8 | OpKind::Immediate32)
        })
        .map(|i| i.immediate(1))
        .filter(|&n| n > 0 && n < 256)
        .ok_or(GoError::NoSymbol("runtime.waitReasonStrings"))?;
    Ok(Globals {
        allglen: first(go, "runtime.forEachGRace", Mnemonic::Mov)?,
        allgs: first(go, "runtime.forEachG", Mnemonic::Mov)?,
        allp: first(go, "runtime.gcMarkTinyAllocs", Mnemonic::Mov)?,
        sched_lock: first(go, "runtime.mcommoninit", Mnemonic::Lea)?,
        // The address taken to index the table: the next instruction reads through it with an
        // index register (the other address taken is the "unknown wait reason" string's).
        wait_reasons: reasons
            .windows(2)
            .find(|w| {
                w[0].mnemonic() == Mnemonic::Lea
                    && w[0].is_ip_rel_memory_operand()
                    && w[1].memory_base() == w[0].op0_register()
                    && w[1].memory_index() != iced_x86::Register::None
            })
            .map(|w| w[0].ip_rel_memory_address())
            .ok_or(GoError::NoSymbol("runtime.waitReasonStrings"))?,
        wait_reasons_len,
    })
}
