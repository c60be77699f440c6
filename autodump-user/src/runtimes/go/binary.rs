//! Go binaries without `.symtab`: names, files, lines and inlined frames from `.gopclntab`
//! (see `gopclntab.rs`), for addresses given as file offsets, as the rest of the symbolizer
//! has them. The file is mapped, not read: the table is paged in as addresses are looked up.

use std::path::Path;

use object::{Object, ObjectSection};

use super::gopclntab::{GoFrame, Pclntab, Reader, Version};
use crate::files::segments::Segments;

pub struct GoBinary {
    map: memmap2::Mmap,
    table: Pclntab,
    segments: Segments,
    /// Every function's entry and name, read the first time they are asked for.
    functions: std::sync::OnceLock<Vec<(u64, String)>>,
}

/// Longest function body `function_code` returns.
const MAX_FUNCTION_BYTES: u64 = 64 * 1024;
/// `moduledata.text`: the same word from Go 1.18 to 1.27.
const MODULEDATA_TEXT_WORD: usize = 22;
/// How far into `runtime.moduledata` its `rodata` field may sit (word 37 in Go 1.19, 42 in 1.27).
const MODULEDATA_SEARCH_WORDS: usize = 64;

impl GoBinary {
    /// The Go table of the ELF file at `path`; None when it is not a Go binary (or its table is
    /// in a format we do not read, which the caller reports as unsymbolized).
    pub fn open(path: &Path) -> Option<Self> {
        let file = std::fs::File::open(path).ok()?;
        // SAFETY: the mapping is read-only; a file truncated under us would fault, as it would
        // for any reader of a mapped executable, and executables in use are not rewritten.
        let map = unsafe { memmap2::Mmap::map(&file) }.ok()?;
        let elf = object::File::parse(&*map).ok()?;
        let section = [".gopclntab", ".data.rel.ro.gopclntab"].iter().find_map(|n| elf.section_by_name(n))?;
        let (at, _) = section.file_range()?;
        let segments = Segments::of(&elf);
        let mut table = Pclntab::parse(&map, at as usize, None)?;
        if table.version != Version::Go116 {
            let moduledata = find_moduledata(&map, &elf, section.address(), at as usize);
            table.gofunc =
                moduledata.and_then(|md| gofunc(&map, &elf, md)).and_then(|g| to_usize(segments.to_offset(g)));
            // Entries are relative to `moduledata.text` (word 22, after the six tables,
            // findfunctab, minpc and maxpc), which is what the runtime uses; newer linkers
            // leave the header's own textStart 0.
            let text = moduledata.and_then(|md| Reader(&map).u64(md + 8 * MODULEDATA_TEXT_WORD));
            if let Some(text) = text.filter(|&t| t != 0) {
                table.text_start = text;
            } else if table.text_start == 0 {
                table.text_start = elf.section_by_name(".text")?.address();
            }
        }
        Some(Self { map, table, segments, functions: std::sync::OnceLock::new() })
    }

    /// The frames at file offset `offset`, innermost first.
    pub fn frames(&self, offset: u64) -> Option<Vec<GoFrame>> {
        let pc = self.segments.to_vaddr(offset)?;
        self.table.frames(&self.map, pc, |va| to_usize(self.segments.to_offset(va)))
    }

    pub fn version(&self) -> Version {
        self.table.version
    }

    /// True when inlined frames can be named (the `go:func.*` region was found, or not needed).
    pub fn has_inline_trees(&self) -> bool {
        self.table.version == Version::Go116 || self.table.gofunc.is_some()
    }

    /// Every function's entry address and name (link-time addresses), in address order.
    pub fn functions(&self) -> &[(u64, String)] {
        self.functions.get_or_init(|| self.table.functions(&self.map).collect())
    }

    /// The machine code of function `name` and its link-time address: up to the next
    /// function's entry, at most `MAX_FUNCTION_BYTES`.
    pub fn function_code(&self, name: &str) -> Option<(u64, &[u8])> {
        let functions = self.functions();
        let i = functions.iter().position(|(_, n)| n == name)?;
        let start = functions[i].0;
        let limit = start.saturating_add(MAX_FUNCTION_BYTES);
        let end = functions.get(i + 1).map_or(limit, |f| f.0).min(limit);
        let offset = to_usize(self.segments.to_offset(start))?;
        let len = usize::try_from(end.checked_sub(start)?).ok()?;
        Some((start, self.map.get(offset..offset.checked_add(len)?)?))
    }
}

fn to_usize(offset: Option<u64>) -> Option<usize> {
    usize::try_from(offset?).ok()
}

/// `moduledata.gofunc`, the address of `go:func.*` that 1.18+ funcdata offsets are relative to.
/// Its position in the struct moves between Go versions, but it always follows `rodata`, the
/// start of the `.rodata` section (after `types`, which is the same address in older versions).
fn gofunc(map: &[u8], elf: &object::File, moduledata: usize) -> Option<u64> {
    let rodata = elf.section_by_name(".rodata")?.address();
    let r = Reader(map);
    let words: Vec<u64> = (0..MODULEDATA_SEARCH_WORDS).map_while(|i| r.u64(moduledata + 8 * i)).collect();
    let at = words.iter().rposition(|&w| w == rodata)?;
    words.get(at + 1).copied().filter(|&gofunc| gofunc >= rodata)
}

/// The file offset of `runtime.firstmoduledata`: the 8-aligned word in a data section that
/// holds the pcHeader's address and is followed by `funcnametab`'s, as the header predicts.
/// Newer linkers give it a section of its own, `.go.module`.
fn find_moduledata(map: &[u8], elf: &object::File, pcheader: u64, pcheader_offset: usize) -> Option<usize> {
    let r = Reader(map);
    let funcnames = pcheader.checked_add(r.u64(pcheader_offset + 8 + 8 * 3)?)?;
    for name in [".go.module", ".noptrdata", ".data", ".data.rel.ro"] {
        let Some(section) = elf.section_by_name(name) else { continue };
        let Some((start, size)) = section.file_range() else { continue };
        let (start, end) = (start as usize, (start + size) as usize);
        let mut at = start.next_multiple_of(8);
        while at + 16 <= end {
            if r.u64(at) == Some(pcheader) && r.u64(at + 8) == Some(funcnames) {
                return Some(at);
            }
            at += 8;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use blazesym::symbolize::{
        source::{Elf, Source},
        Input, Symbolized, Symbolizer,
    };
    use object::{Object, ObjectSymbol};

    use super::*;
    use crate::test_go::{build, build_with, toolchains};

    fn offset_of(path: &Path, va: u64) -> u64 {
        let data = std::fs::read(path).unwrap();
        let elf = object::File::parse(&*data).unwrap();
        Segments::of(&elf).to_offset(va).unwrap()
    }

    /// Our table lists exactly the functions the symbol table has, and at addresses across the
    /// program, names, lines and inlined frames agree with DWARF (through blazesym); the
    /// stripped build gives the same frames at the same addresses.
    #[test]
    fn gopclntab_agrees_with_symbols_and_dwarf() {
        for goroot in toolchains() {
            let Some((full, stripped)) = build("gospin", goroot.as_deref()) else { continue };
            let ours = GoBinary::open(&full).expect("a Go binary");
            let theirs = GoBinary::open(&stripped).expect("a stripped Go binary");
            assert!(ours.has_inline_trees() && theirs.has_inline_trees(), "go:func.* found");

            let data = std::fs::read(&full).unwrap();
            let elf = object::File::parse(&*data).unwrap();
            let symbols: std::collections::BTreeMap<u64, String> = elf
                .symbols()
                .filter(|s| s.kind() == object::SymbolKind::Text && s.size() > 0)
                .filter_map(|s| Some((s.address(), s.name().ok()?.to_string())))
                .collect();
            let listed = ours.functions();
            // .symtab marks assembly functions `.abi0`; pclntab (and so pprof) does not. Shape
            // functions are `[...]` in pclntab where .symtab spells the array length out.
            let same_name = |va: &u64, name: &String| {
                symbols.get(va).is_some_and(|s| s.trim_end_matches(".abi0") == name || name.contains("[...]"))
            };
            let matching = listed.iter().filter(|(va, name)| same_name(va, name)).count();
            for (va, name) in listed.iter().filter(|(va, name)| !same_name(va, name)).take(8) {
                eprintln!("pclntab {va:#x} {name}, .symtab {:?}", symbols.get(va));
            }
            assert!(
                listed.len() > 1000 && matching * 100 >= listed.len() * 99,
                "{matching} of {} functions match .symtab",
                listed.len()
            );

            let blaze = Symbolizer::builder().enable_code_info(true).enable_inlined_fns(true).build();
            let (mut compared, mut inlined, mut same) = (0, 0, 0);
            let pcs = listed.windows(2).step_by(3).flat_map(|w| {
                let (start, end) = (w[0].0, w[1].0);
                [5, 23, 61, 150, 400].into_iter().map(move |d| start + d).filter(move |&pc| pc < end)
            });
            for pc in pcs {
                let offset = offset_of(&full, pc);
                let Some(frames) = ours.frames(offset) else { continue };
                assert_eq!(
                    theirs.frames(offset_of(&stripped, pc)).as_ref(),
                    Some(&frames),
                    "stripped differs at {pc:#x}"
                );
                let src = Source::Elf(Elf::new(&full));
                let Ok(result) = blaze.symbolize(&src, Input::FileOffset(&[offset])) else { continue };
                let Some(Symbolized::Sym(sym)) = result.first() else { continue };
                let name =
                    |n: &str| if n.contains('[') { "[shape]".into() } else { n.trim_end_matches(".abi0").to_string() };
                let mut dwarf: Vec<(String, Option<u32>)> = sym
                    .inlined
                    .iter()
                    .rev()
                    .map(|f| (name(&f.name), f.code_info.as_ref().and_then(|c| c.line)))
                    .collect();
                dwarf.push((name(&sym.name), sym.code_info.as_ref().and_then(|c| c.line)));
                let mine: Vec<(String, Option<u32>)> = frames.iter().map(|f| (name(&f.function), f.line)).collect();
                compared += 1;
                inlined += usize::from(frames.len() > 1);
                // Autogenerated functions (`type:.eq.*`, wrappers, `init`) have a line in pclntab
                // (1, `<autogenerated>`) and none in DWARF: names must agree, lines where both have one.
                let agree = mine.len() == dwarf.len()
                    && mine.iter().zip(&dwarf).all(|(m, d)| m.0 == d.0 && (d.1.is_none() || m.1 == d.1));
                same += usize::from(agree);
                if !agree && (compared - same <= 3 || std::env::var_os("SHOW_ALL").is_some()) {
                    eprintln!("at {pc:#x}: pclntab {mine:?}, DWARF {dwarf:?}");
                }
            }
            eprintln!(
                "{}: {same} of {compared} addresses agree with DWARF, {inlined} with inlined frames",
                goroot.as_ref().map_or("go".into(), |g| g.display().to_string())
            );
            assert!(compared > 200 && inlined > 10, "{compared} compared, {inlined} inlined");

            // A PIE build of the same program, stripped: the same frames at the same functions.
            let Some((_, pie)) = build_with("gospin", goroot.as_deref(), &["-buildmode=pie"]) else { continue };
            let pie_table = GoBinary::open(&pie).expect("a PIE Go binary");
            assert!(pie_table.has_inline_trees(), "go:func.* found in the PIE build");
            let pie_entries: std::collections::HashMap<String, u64> =
                pie_table.functions().iter().map(|(a, n)| (n.clone(), *a)).collect();
            let (mut checked, mut equal) = (0, 0);
            for (va, name) in listed.iter().filter(|(_, n)| n.starts_with("main.") || n.starts_with("runtime.g")) {
                let Some(&pie_va) = pie_entries.get(name) else { continue };
                let frames = |table: &GoBinary, path: &Path, at: u64| table.frames(offset_of(path, at + 1));
                checked += 1;
                equal += usize::from(
                    frames(&ours, &full, *va).map(|f| f[0].function.clone())
                        == frames(&pie_table, &pie, pie_va).map(|f| f[0].function.clone()),
                );
            }
            assert!(checked > 20 && equal == checked, "PIE: {equal} of {checked} functions named alike");
            assert!(same * 100 >= compared * 99, "{same} of {compared} agree");
        }
    }
}
