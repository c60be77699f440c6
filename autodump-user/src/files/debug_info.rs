//! What an ELF file offers for naming its addresses, and its separate debug file when it has
//! none of its own: `DIR/.build-id/xx/rest.debug` for each debug directory (`--debug-dir`,
//! `/usr/lib/debug` by default), where distributions' debug-symbol packages install them.
//! (`.gnu_debuglink` files are found by blazesym itself, in the same directories.)

use std::path::{Path, PathBuf};

use object::{Object, ObjectSymbol};

use super::segments::Segments;

/// Where distributions install debug files.
pub const DEFAULT_DEBUG_DIR: &str = "/usr/lib/debug";

pub struct Info {
    /// A symbol table with functions, or DWARF.
    pub symbols: bool,
    pub build_id: bool,
}

/// A separate debug file for a stripped executable, and how to turn the executable's file
/// offsets into the virtual addresses both share.
pub struct DebugFile {
    pub path: PathBuf,
    /// The executable's loaded segments.
    segments: Segments,
}

impl DebugFile {
    pub fn virtual_address(&self, offset: u64) -> Option<u64> {
        self.segments.to_vaddr(offset)
    }
}

fn with_elf<T>(path: &Path, f: impl FnOnce(&object::File) -> Option<T>) -> Option<T> {
    let file = std::fs::File::open(path).ok()?;
    // SAFETY: a read-only mapping, dropped before this returns.
    let map = unsafe { memmap2::Mmap::map(&file) }.ok()?;
    f(&object::File::parse(&*map).ok()?)
}

/// A symbol table with functions, or DWARF.
fn has_symbols(elf: &object::File) -> bool {
    elf.symbols().any(|s| s.kind() == object::SymbolKind::Text) || elf.section_by_name(".debug_info").is_some()
}

pub fn inspect(path: &Path) -> Option<Info> {
    with_elf(path, |elf| Some(Info { symbols: has_symbols(elf), build_id: elf.build_id().ok().flatten().is_some() }))
}

/// The debug file of `path` found by its build-id, when `path` has no symbols of its own.
pub fn find_by_build_id(path: &Path, debug_dirs: &[PathBuf]) -> Option<DebugFile> {
    with_elf(path, |elf| {
        if has_symbols(elf) {
            return None;
        }
        let id = elf.build_id().ok().flatten().filter(|id| id.len() >= 2)?;
        let hex: String = id.iter().map(|b| format!("{b:02x}")).collect();
        let relative = Path::new(".build-id").join(&hex[..2]).join(format!("{}.debug", &hex[2..]));
        let found = debug_dirs.iter().map(|d| d.join(&relative)).find(|p| p.is_file())?;
        Some(DebugFile { path: found, segments: Segments::of(elf) })
    })
}
