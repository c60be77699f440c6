//! What an address stands for ([`Location`]: its frames, or why it has no name), and the ways
//! the symbolizer makes one from each source.

use std::sync::Arc;

use blazesym::symbolize::Sym;

use crate::collect::maps::Mapping;

/// One function in a stack.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Frame {
    pub function: Arc<str>,
    pub file: Option<Arc<str>>,
    pub line: Option<u32>,
}

/// What one instruction pointer stands for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Location {
    pub address: u64,
    pub kernel: bool,
    pub mapping: Option<Mapping>,
    /// Innermost first: functions inlined at this address, then the function that holds it.
    /// Shared by every process that maps the same file (see `files`).
    pub frames: Arc<[Frame]>,
    /// Why this address has no function name, when it has none (`module+0xoffset`).
    pub unnamed: Option<Arc<str>>,
}

/// The frames of a blazesym symbol: inlined functions innermost first, then the function.
pub(super) fn frames_of(sym: &Sym<'_>) -> Arc<[Frame]> {
    let frame = |name: &str, info: Option<&blazesym::symbolize::CodeInfo<'_>>| Frame {
        function: Arc::from(name),
        file: info.map(|i| Arc::from(i.to_path().to_string_lossy().as_ref())),
        line: info.and_then(|i| i.line),
    };
    let mut frames: Vec<Frame> = sym.inlined.iter().rev().map(|f| frame(&f.name, f.code_info.as_ref())).collect();
    frames.push(frame(&sym.name, sym.code_info.as_deref()));
    frames.into()
}

pub(super) fn located(address: u64, kernel: bool, mapping: Option<Mapping>, sym: &Sym<'_>) -> Location {
    Location { address, kernel, mapping, frames: frames_of(sym), unnamed: None }
}

/// An address without a symbol, named after the start of its function: `module+0xSTART`
/// (file offsets), so that every address of one function shares one frame.
pub(super) fn grouped(address: u64, mapping: Mapping, start: u64, why: Arc<str>) -> Location {
    let name = format!("{}+{start:#x}", mapping.module());
    let frames = [Frame { function: name.into(), file: None, line: None }].into();
    Location { address, kernel: false, mapping: Some(mapping), frames, unnamed: Some(why) }
}

/// A location with only a function name.
pub(super) fn named(address: u64, mapping: Mapping, name: &str) -> Location {
    let frames = [Frame { function: Arc::from(name), file: None, line: None }].into();
    Location { address, kernel: false, mapping: Some(mapping), frames, unnamed: None }
}

/// `module+0xoffset` (file offset) for a mapped address, `[unknown]+0xaddr` otherwise.
pub(super) fn unknown(address: u64, kernel: bool, mapping: Option<Mapping>, why: Arc<str>) -> Location {
    let name = match (&mapping, kernel) {
        (_, true) => format!("[kernel]+{address:#x}"),
        (Some(m), false) => format!("{}+{:#x}", m.module(), address - m.start + m.file_offset),
        (None, false) => format!("[unknown]+{address:#x}"),
    };
    let frames = [Frame { function: name.into(), file: None, line: None }].into();
    Location { address, kernel, mapping, frames, unnamed: Some(why) }
}

/// Why addresses of a mapping that is not a file have no names.
pub(super) fn why_not_a_file(mapping: &Option<Mapping>) -> Arc<str> {
    match mapping {
        Some(m) if &*m.path == "[vdso]" => "no symbol of the vDSO covers it".into(),
        Some(_) => "not backed by a file (JIT or anonymous code)".into(),
        None => "outside every executable mapping (a broken frame-pointer chain)".into(),
    }
}
