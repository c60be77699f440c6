//! The runtime's globals in a Go binary without a symbol table (`-ldflags=-s`), found where the
//! runtime's own functions use them. `.gopclntab` names every function even when `.symtab` is
//! gone, and the instructions of a few small, stable runtime functions address the globals
//! RIP-relative: the first such load in `runtime.forEachGRace` is `allglen`, in
//! `runtime.forEachG` it is `allgs`, in `runtime.gcMarkTinyAllocs` it is `allp`; the first
//! address `runtime.mcommoninit` takes is `&sched.lock`; `runtime.waitReason.String` takes the
//! address of `waitReasonStrings` after comparing the reason with its length. Checked against the
//! symbol table for Go 1.19 and today's Go (`stripped_tests`). The heap profile's globals are
//! found the same way: the first load in `runtime.mProf_FlushLocked` is `mbuckets`, in
//! `runtime.allocmcache` it is `MemProfileRate`; `runtime.memProfileInternal` (or, before Go
//! 1.23, `runtime.MemProfile`, present only when the program references it) loads `mProfCycle`
//! first; and `disableMemoryProfiling` is the byte read just before a store to `MemProfileRate`
//! in `runtime.init` (Go 1.19) or `runtime.schedinit`.

use iced_x86::{Decoder, DecoderOptions, MemorySize, Mnemonic, OpKind};

use super::binary::GoBinary;
use super::GoError;

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

/// Link-time addresses of the heap profile's globals.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeapGlobals {
    pub mbuckets: u64,
    pub mem_profile_rate: u64,
    pub disable_memory_profiling: Option<u64>,
    pub mprof_cycle: Option<u64>,
}

pub fn find_heap(go: &GoBinary) -> Result<HeapGlobals, GoError> {
    let mem_profile_rate = first(go, "runtime.allocmcache", Mnemonic::Mov)?;
    let cycle = first(go, "runtime.memProfileInternal", Mnemonic::Mov)
        .or_else(|_| first(go, "runtime.MemProfile", Mnemonic::Mov));
    // `if disableMemoryProfiling { MemProfileRate = 0 }`: a byte read just before a store to
    // MemProfileRate, in runtime.init (Go 1.19) or runtime.schedinit (later).
    let disable = ["runtime.init", "runtime.schedinit"].into_iter().find_map(|function| {
        let code = decode(go, function).ok()?;
        code.windows(8).find_map(|w| {
            let flag = &w[0];
            let stores_rate = w[1..].iter().any(|i| {
                i.mnemonic() == Mnemonic::Mov
                    && i.op0_kind() == OpKind::Memory
                    && i.is_ip_rel_memory_operand()
                    && i.ip_rel_memory_address() == mem_profile_rate
            });
            let reads_byte = flag.is_ip_rel_memory_operand() && flag.memory_size() == MemorySize::UInt8;
            (reads_byte && stores_rate).then(|| flag.ip_rel_memory_address())
        })
    });
    Ok(HeapGlobals {
        mbuckets: first(go, "runtime.mProf_FlushLocked", Mnemonic::Mov)?,
        mem_profile_rate,
        disable_memory_profiling: disable,
        mprof_cycle: cycle.ok(),
    })
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
