//! What a CRuby file (`libruby-3.X.so`, or a `ruby` linked statically) says, read once per file
//! (`files::shared`) and shared by every process that maps it: its version, and where the
//! interpreter keeps what the reader and the probe need, as file addresses.
//!
//! Debian's 3.1 exports `ruby_current_vm_ptr`, `ruby_current_ec` and `ruby_global_symbols`;
//! its 3.3 and 3.4 are built with hidden visibility and export none of them, nor `rb_vm_exec`.
//! What the file's exported functions do says where they are, as Ruby's own code reads them:
//! - `ruby_vm_at_exit` loads the VM pointer (`GET_VM()`) from its global;
//! - `rb_current_receiver` reads `ruby_current_ec` (`GET_EC()`): a `__tls_get_addr` call on a
//!   TLS index in the GOT, then a load at the variable's offset in the module's TLS block;
//! - `rb_sym_all_symbols` loads `ruby_global_symbols.str_sym`.
//!
//! Each is a candidate until the process's memory confirms it (`reader.rs`). The interpreter
//! loop (`vm_exec_core`) is found in the process too: with direct threading, a running iseq's
//! code holds the addresses of its instructions' handlers, which lie in that one function.

use std::sync::OnceLock;

use iced_x86::{Decoder, DecoderOptions, Instruction, MemorySize, Mnemonic, OpKind, Register};
use object::{Object, ObjectSection, ObjectSymbol};

use super::offsets::{self, Layout};
use crate::files::{fde::FunctionStarts, segments::Segments, shared::PerFile};

/// The Ruby files read so far, for every watched process.
pub type RubyFiles = PerFile<RubyFile>;

/// Bytes of an exported function decoded at most.
const MAX_FUNCTION_BYTES: u64 = 4096;

pub enum RubyFile {
    /// Not CRuby: another ELF file named like it.
    NotRuby,
    Interpreter(Box<Interpreter>),
}

/// A CRuby interpreter file. Addresses are the file's virtual addresses.
pub struct Interpreter {
    /// "3.4.11", from `ruby_version`.
    pub version: String,
    /// Its layout, or why this version is not read.
    pub layout: Result<Layout, String>,
    /// Globals that may hold the VM pointer (`ruby_current_vm_ptr`).
    pub vm_ptr: Vec<u64>,
    /// Where `ruby_global_symbols` may be.
    pub global_symbols: Vec<u64>,
    /// `ruby_current_ec`: its TLS index in the GOT (the module's number, then an offset, both
    /// written by the dynamic loader) and its offset from there in the module's block.
    pub current_ec: Option<(u64, u64)>,
    /// Every function's range, from `.eh_frame`: the interpreter loop is one of them; and where
    /// the code is.
    pub functions: Option<FunctionStarts>,
    pub text: Option<(u64, u64)>,
    /// The interpreter loop, once a process has shown where it is (the same for every process).
    pub interpreter: OnceLock<(u64, u64)>,
    pub segments: Segments,
}

impl RubyFile {
    pub fn parse(elf: &object::File<'_>, data: &[u8]) -> Self {
        let segments = Segments::of(elf);
        let symbol = |name: &str| {
            elf.dynamic_symbols().chain(elf.symbols()).find(|s| s.name() == Ok(name)).map(|s| (s.address(), s.size()))
        };
        let Some(version) = symbol("ruby_version").and_then(|(at, _)| c_string(data, &segments, at)) else {
            return Self::NotRuby;
        };
        let minor = version.split('.').nth(1).and_then(|m| m.parse::<u32>().ok());
        let major = version.split('.').next().and_then(|m| m.parse::<u32>().ok());
        let layout = match (major, minor) {
            (Some(3), Some(minor)) => offsets::of(minor),
            _ => None,
        }
        .ok_or_else(|| format!("Ruby {version} is not supported (3.1, 3.3 and 3.4 are)"));
        let code = |name: &str| -> Vec<Instruction> {
            let Some((at, size)) = symbol(name) else { return Vec::new() };
            let size = if size == 0 { MAX_FUNCTION_BYTES } else { size.min(MAX_FUNCTION_BYTES) };
            decode(data, &segments, at, size)
        };
        let vm_ptr = match symbol("ruby_current_vm_ptr") {
            Some((at, _)) => vec![at],
            None => rip_loads(&code("ruby_vm_at_exit")),
        };
        let global_symbols = match symbol("ruby_global_symbols") {
            Some((at, _)) => vec![at],
            // The loads of `str_sym`, a word into the table.
            // The loads of `str_sym`, a word into the table (the reader also tries each as a GOT slot).
            None => rip_loads(&code("rb_sym_all_symbols")).into_iter().map(|a| a.wrapping_sub(8)).collect(),
        };
        let current_ec = tls_access(&code("rb_current_receiver"));
        Self::Interpreter(Box::new(Interpreter {
            version,
            layout,
            vm_ptr,
            global_symbols,
            current_ec,
            functions: FunctionStarts::parse(data),
            text: text_range(elf),
            interpreter: OnceLock::new(),
            segments,
        }))
    }
}

/// The NUL-terminated string at file address `at`, if it is short and printable.
fn c_string(data: &[u8], segments: &Segments, at: u64) -> Option<String> {
    let start = usize::try_from(segments.to_offset(at)?).ok()?;
    let bytes = data.get(start..start.checked_add(32)?.min(data.len()))?;
    let end = bytes.iter().position(|&b| b == 0)?;
    let text = std::str::from_utf8(&bytes[..end]).ok()?;
    (!text.is_empty() && text.chars().all(|c| c.is_ascii_graphic())).then(|| text.to_string())
}

/// The instructions of the function at file address `at`, `size` bytes at most.
fn decode(data: &[u8], segments: &Segments, at: u64, size: u64) -> Vec<Instruction> {
    let Some(start) = segments.to_offset(at).and_then(|o| usize::try_from(o).ok()) else { return Vec::new() };
    let end = start.saturating_add(size as usize).min(data.len());
    let Some(bytes) = data.get(start..end) else { return Vec::new() };
    Decoder::with_ip(64, bytes, at, DecoderOptions::NONE).into_iter().take_while(|i| !i.is_invalid()).collect()
}

/// Globals a function loads a word from (`mov r64, [rip+X]`), in order.
fn rip_loads(code: &[Instruction]) -> Vec<u64> {
    code.iter()
        .filter(|i| i.mnemonic() == Mnemonic::Mov && i.op0_kind() == OpKind::Register && i.op1_kind() == OpKind::Memory)
        .filter(|i| i.memory_base() == Register::RIP && i.memory_size() == MemorySize::UInt64)
        .map(Instruction::memory_displacement64)
        .collect()
}

/// The first thread-local read of a function: the TLS index passed to `__tls_get_addr`
/// (`lea rdi, [rip+X]`, then the call) and the offset of the load from what it returned.
fn tls_access(code: &[Instruction]) -> Option<(u64, u64)> {
    let at = code.iter().position(|i| {
        i.mnemonic() == Mnemonic::Lea && i.op0_register() == Register::RDI && i.memory_base() == Register::RIP
    })?;
    let index = code[at].memory_displacement64();
    let call = at + code[at..].iter().position(|i| i.mnemonic() == Mnemonic::Call)?;
    let load = code.get(call + 1).filter(|i| {
        i.mnemonic() == Mnemonic::Mov && i.op1_kind() == OpKind::Memory && i.memory_base() == Register::RAX
    })?;
    Some((index, load.memory_displacement64()))
}

/// Where the file's code is: the interpreter's handlers must lie in it.
fn text_range(elf: &object::File<'_>) -> Option<(u64, u64)> {
    let text = elf.section_by_name(".text")?;
    Some((text.address(), text.address() + text.size()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Debian 12's libruby 3.1 exports what the reader needs; the instructions' way is checked
    /// against those symbols on the same file.
    #[test]
    fn debians_ruby_3_1_is_read_by_its_symbols_and_its_code_alike() {
        let path = "/usr/lib/x86_64-linux-gnu/libruby-3.1.so.3.1";
        let Ok(data) = std::fs::read(path) else {
            crate::test_go::skip("no Debian ruby3.1 (libruby-3.1.so): `cargo xtask setup` installs it");
            return;
        };
        let elf = object::File::parse(&*data).unwrap();
        let RubyFile::Interpreter(ruby) = RubyFile::parse(&elf, &data) else { panic!("not Ruby") };
        assert!(ruby.version.starts_with("3.1."), "{}", ruby.version);
        assert_eq!(ruby.layout, Ok(offsets::V3_1));
        let symbol = |name: &str| elf.dynamic_symbols().find(|s| s.name() == Ok(name)).map(|s| s.address()).unwrap();
        assert_eq!(ruby.vm_ptr, [symbol("ruby_current_vm_ptr")]);
        let segments = Segments::of(&elf);
        let code = |name: &str| decode(&data, &segments, symbol(name), MAX_FUNCTION_BYTES);
        // An exported variable is reached through its GOT slot: the slot's relocation names it.
        let got_slot_of = |name: &str| {
            elf.dynamic_relocations().into_iter().flatten().find_map(|(at, r)| match r.target() {
                object::RelocationTarget::Symbol(i) => {
                    let table = elf.dynamic_symbol_table()?;
                    (object::ObjectSymbolTable::symbol_by_index(&table, i).ok()?.name() == Ok(name)).then_some(at)
                }
                _ => None,
            })
        };
        let vm_slot = got_slot_of("ruby_current_vm_ptr").expect("a GOT slot for ruby_current_vm_ptr");
        assert!(rip_loads(&code("ruby_vm_at_exit")).contains(&vm_slot), "GET_VM() through the GOT");
        // The symbol table is not exported: what the code loads is a candidate, checked in a process.
        assert!(!ruby.global_symbols.is_empty(), "rb_sym_all_symbols loads its table's str_sym");
        // `ruby_current_ec`'s TLS index is the GOT pair its DTPMOD64 relocation fills.
        let (index, offset) = ruby.current_ec.expect("rb_current_receiver reads GET_EC()");
        let at_index = elf.dynamic_relocations().into_iter().flatten().find(|(at, _)| *at == index);
        let dtpmod64 = object::RelocationFlags::Elf { r_type: object::elf::R_X86_64_DTPMOD64 };
        assert_eq!(at_index.map(|(_, r)| r.flags()), Some(dtpmod64), "{index:#x}");
        assert_eq!(offset, 0, "the variable is the index's own (its offset is in the GOT)");
    }
}
