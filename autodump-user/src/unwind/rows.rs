//! Compiles an ELF file's call-frame information (`.eh_frame`, else `.debug_frame`) into the
//! compact rows the probes walk with (see `autodump_common::unwind`). Parsed with gimli; an
//! entry gimli cannot parse is counted and left out, so its code is walked by frame pointer.

use autodump_common::unwind::{cfa, UnwindRow, RBP_UNCHANGED};
use gimli::{
    BaseAddresses, CfaRule, CieOrFde, DebugFrame, EhFrame, EndianSlice, LittleEndian, Reader, Register, RegisterRule,
    UnwindContext, UnwindSection, X86_64,
};
use object::{Object, ObjectSection, ReadRef};

/// Largest CFI section read from one file.
const MAX_SECTION_BYTES: u64 = 256 << 20;

/// Rows compiled from one file at most: a 20 MB Rust binary has about 185,000.
pub const MAX_ROWS_PER_FILE: usize = 4_000_000;

/// `DW_OP_breg7 (rsp) 8; DW_OP_breg16 (rip) 0; DW_OP_lit15; DW_OP_and; DW_OP_litN; DW_OP_ge;
/// DW_OP_lit3; DW_OP_shl; DW_OP_plus`: the x86_64 PLT's CFA, N at byte 6.
const PLT_EXPRESSION: [u8; 11] = [0x77, 0x08, 0x80, 0x00, 0x3f, 0x1a, 0x3b, 0x2a, 0x33, 0x24, 0x22];
const PLT_LIT_AT: usize = 6;
const DW_OP_LIT0: u8 = 0x30;
const DW_OP_BREG6: u8 = 0x76;
const DW_OP_DEREF: u8 = 0x06;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RowsError {
    #[error("not an ELF file")]
    NotElf,
    #[error("no .eh_frame or .debug_frame")]
    NoCfi,
    #[error("code above 4 GiB in the file's address space")]
    HighAddresses,
    #[error("its CFI section is larger than 256 MiB")]
    TooLarge,
}

/// A file's rows, sorted by address, and what could not be read.
#[derive(Debug, Default)]
pub struct Compiled {
    pub rows: Vec<UnwindRow>,
    pub fdes: usize,
    /// Entries gimli could not parse or evaluate: their code is walked by frame pointer.
    pub bad_entries: usize,
    /// The file's CFI came from `.debug_frame`.
    pub from_debug_frame: bool,
    /// Size of the CFI section compiled.
    pub cfi_bytes: u64,
}

/// Compiles `data`, an ELF file. Go code keeps its frame pointers, so a Go binary's own
/// `.debug_frame` is not used; its `.eh_frame` (C code linked in through cgo) is.
/// `data` is the file's bytes, or a cache that reads only the sections asked for.
pub fn compile<'d, R: ReadRef<'d>>(data: R) -> Result<Compiled, RowsError> {
    let elf = object::File::parse(data).map_err(|_| RowsError::NotElf)?;
    let is_go = elf.section_by_name(".gopclntab").is_some() || elf.section_by_name(".go.buildinfo").is_some();
    let section_data =
        |name: &str| -> Result<Option<Section<'d>>, RowsError> {
            let Some(section) = elf.section_by_name(name) else { return Ok(None) };
            if section.size() > MAX_SECTION_BYTES {
                return Err(RowsError::TooLarge);
            }
            match section.compressed_data() {
                Ok(c) if c.uncompressed_size > MAX_SECTION_BYTES => Err(RowsError::TooLarge),
                _ => Ok(crate::files::bounded_section_data(&section, MAX_SECTION_BYTES)
                    .map(|bytes| (section.address(), bytes))),
            }
        };
    let mut bases = BaseAddresses::default();
    if let Some(text) = elf.section_by_name(".text") {
        bases = bases.set_text(text.address());
    }
    if let Some(got) = elf.section_by_name(".got") {
        bases = bases.set_got(got.address());
    }
    let cfi_bytes;
    let (mut fdes, from_debug_frame) = if let Some((address, bytes)) = section_data(".eh_frame")? {
        let bases = bases.set_eh_frame(address);
        cfi_bytes = bytes.len() as u64;
        (read_fdes(&EhFrame::new(&bytes, LittleEndian), &bases), false)
    } else if let Some((_, bytes)) = section_data(".debug_frame")?.filter(|_| !is_go) {
        cfi_bytes = bytes.len() as u64;
        (read_fdes(&DebugFrame::new(&bytes, LittleEndian), &bases), true)
    } else {
        return Err(RowsError::NoCfi);
    };
    fdes.entries.sort_unstable_by_key(|(start, _, _)| *start);
    let mut compiled =
        Compiled { fdes: fdes.entries.len(), bad_entries: fdes.bad, from_debug_frame, cfi_bytes, rows: Vec::new() };
    let mut previous_end = 0u64;
    for (start, end, rows) in fdes.entries {
        // FDEs that overlap an earlier one (left behind for discarded code, or garbage): the
        // earlier one stands.
        if start < previous_end {
            continue;
        }
        if start > previous_end && previous_end != 0 {
            push(&mut compiled.rows, previous_end, none_row())?;
        }
        for (pc, row) in rows {
            push(&mut compiled.rows, pc, row)?;
        }
        previous_end = previous_end.max(end);
    }
    if previous_end != 0 {
        push(&mut compiled.rows, previous_end, none_row())?;
    }
    compiled.rows.truncate(MAX_ROWS_PER_FILE);
    Ok(compiled)
}

fn none_row() -> UnwindRow {
    UnwindRow { cfa_kind: cfa::NONE, ..UnwindRow::default() }
}

/// Appends a row at `pc`, merged with the previous one when it says the same.
fn push(rows: &mut Vec<UnwindRow>, pc: u64, row: UnwindRow) -> Result<(), RowsError> {
    let pc = u32::try_from(pc).map_err(|_| RowsError::HighAddresses)?;
    let row = UnwindRow { pc, ..row };
    match rows.last_mut() {
        // Rows stay sorted whatever the input: the probes binary-search them.
        Some(last) if pc < last.pc => {}
        Some(last) if last.pc == pc => *last = row,
        Some(last) if UnwindRow { pc, ..*last } == row => {}
        _ => rows.push(row),
    }
    Ok(())
}

/// A section's address and bytes.
type Section<'d> = (u64, std::borrow::Cow<'d, [u8]>);

/// Per FDE: (start, end, rows at their addresses).
type Fde = (u64, u64, Vec<(u64, UnwindRow)>);

#[derive(Default)]
struct Fdes {
    entries: Vec<Fde>,
    bad: usize,
}

fn read_fdes<'a, S>(section: &S, bases: &BaseAddresses) -> Fdes
where
    S: UnwindSection<EndianSlice<'a, LittleEndian>>,
{
    let mut out = Fdes::default();
    let mut ctx = UnwindContext::new();
    let mut total_rows = 0usize;
    let mut entries = section.entries(bases);
    loop {
        let partial = match entries.next() {
            Ok(Some(CieOrFde::Fde(partial))) => partial,
            Ok(Some(CieOrFde::Cie(_))) => continue,
            Ok(None) => break,
            // The rest of the section cannot be found past a broken length.
            Err(_) => {
                out.bad += 1;
                break;
            }
        };
        let Ok(fde) = partial.parse(|s, b, o| s.cie_from_offset(b, o)) else {
            out.bad += 1;
            continue;
        };
        if fde.len() == 0 {
            continue;
        }
        let signal = fde.cie().is_signal_trampoline();
        let mut rows = Vec::new();
        let ok = (|| -> gimli::Result<()> {
            let mut table = fde.rows(section, bases, &mut ctx)?;
            while let Some(row) = table.next_row()? {
                let compiled = if signal {
                    UnwindRow { cfa_kind: cfa::SIGNAL, ..UnwindRow::default() }
                } else {
                    translate(section, row.cfa(), row.register(X86_64::RA), row.register(X86_64::RBP))
                };
                rows.push((row.start_address(), compiled));
            }
            Ok(())
        })();
        if ok.is_err() {
            out.bad += 1;
            continue;
        }
        total_rows += rows.len();
        out.entries.push((fde.initial_address(), fde.end_address(), rows));
        if total_rows >= MAX_ROWS_PER_FILE {
            break;
        }
    }
    out
}

/// One gimli row as the probes' row.
fn translate<'a, S>(
    section: &S,
    cfa_rule: &CfaRule<usize>,
    ra: Option<RegisterRule<usize>>,
    rbp: Option<RegisterRule<usize>>,
) -> UnwindRow
where
    S: UnwindSection<EndianSlice<'a, LittleEndian>>,
{
    let unsupported = UnwindRow { cfa_kind: cfa::UNSUPPORTED, ..UnwindRow::default() };
    match ra {
        Some(RegisterRule::Undefined) => return UnwindRow { cfa_kind: cfa::END, ..UnwindRow::default() },
        // The x86_64 ABI's rule, which every CIE states.
        None | Some(RegisterRule::Offset(-8)) => {}
        Some(_) => return unsupported,
    }
    let rbp_offset = match rbp {
        None | Some(RegisterRule::Undefined) | Some(RegisterRule::SameValue) => RBP_UNCHANGED,
        Some(RegisterRule::Offset(off)) => match i16::try_from(off) {
            Ok(off) if off != RBP_UNCHANGED => off,
            _ => return unsupported,
        },
        Some(_) => return unsupported,
    };
    let (cfa_kind, cfa_offset) = match cfa_rule {
        CfaRule::RegisterAndOffset { register, offset } => {
            let Ok(offset) = i32::try_from(*offset) else { return unsupported };
            match *register {
                Register(7) => (cfa::RSP, offset),
                Register(6) => (cfa::RBP, offset),
                _ => return unsupported,
            }
        }
        CfaRule::Expression(expression) => {
            let Ok(bytes) = expression.get(section) else { return unsupported };
            match classify_expression(bytes.0.slice()) {
                Some(kind) => kind,
                None => return unsupported,
            }
        }
    };
    UnwindRow { pc: 0, cfa_offset, rbp_offset, cfa_kind, _pad: [0; 5] }
}

/// The two CFA expressions real x86_64 code uses (besides signal frames).
fn classify_expression(bytes: &[u8]) -> Option<(u8, i32)> {
    if bytes.len() == PLT_EXPRESSION.len() {
        let lit = bytes[PLT_LIT_AT].wrapping_sub(DW_OP_LIT0);
        let same = bytes.iter().zip(PLT_EXPRESSION).enumerate().all(|(i, (a, b))| i == PLT_LIT_AT || *a == b);
        if same && lit < 16 {
            return Some((cfa::PLT, i32::from(lit)));
        }
    }
    if bytes.first() == Some(&DW_OP_BREG6) && bytes.last() == Some(&DW_OP_DEREF) {
        let mut reader = EndianSlice::new(&bytes[1..bytes.len() - 1], LittleEndian);
        let offset = reader.read_sleb128().ok()?;
        if reader.is_empty() {
            return Some((cfa::DEREF_RBP, i32::try_from(offset).ok()?));
        }
    }
    None
}

#[cfg(test)]
#[path = "rows_tests.rs"]
mod tests;
