//! Functions of stripped native code, told apart by their unwind tables: every function the
//! compiler emits has an FDE in `.eh_frame` covering exactly its code (glibc, gzip and Rust
//! release builds keep `.eh_frame` when they drop their symbols), so every address of one
//! function gets one name, `module+0xSTART`, and a flamegraph shows one box per function
//! instead of one per instruction. Parsed with gimli; a broken table only yields fewer starts.

use std::path::Path;

use gimli::{BaseAddresses, CieOrFde, EhFrame, LittleEndian, UnwindSection};
use object::{Object, ObjectSection};

use super::segments::Segments;

/// FDEs read from one file at most (a 20 MB Rust binary has about 40,000).
const MAX_FDES: usize = 2_000_000;

pub struct FunctionStarts {
    /// (start, end) virtual addresses of each FDE, sorted by start.
    ranges: Vec<(u64, u64)>,
    segments: Segments,
}

impl FunctionStarts {
    pub fn open(path: &Path) -> Option<Self> {
        let file = std::fs::File::open(path).ok()?;
        // SAFETY: a read-only mapping, dropped before this returns.
        let map = unsafe { memmap2::Mmap::map(&file) }.ok()?;
        Self::parse(&map)
    }

    pub fn parse(data: &[u8]) -> Option<Self> {
        let elf = object::File::parse(data).ok()?;
        let section = elf.section_by_name(".eh_frame")?;
        let eh_frame = EhFrame::new(section.data().ok()?, LittleEndian);
        let mut bases = BaseAddresses::default().set_eh_frame(section.address());
        if let Some(text) = elf.section_by_name(".text") {
            bases = bases.set_text(text.address());
        }
        if let Some(got) = elf.section_by_name(".got") {
            bases = bases.set_got(got.address());
        }
        let mut ranges = Vec::new();
        let mut entries = eh_frame.entries(&bases);
        while let Ok(Some(entry)) = entries.next() {
            if let CieOrFde::Fde(partial) = entry {
                if let Ok(fde) = partial.parse(|section, bases, offset| section.cie_from_offset(bases, offset)) {
                    if fde.len() > 0 {
                        ranges.push((fde.initial_address(), fde.initial_address().saturating_add(fde.len())));
                    }
                }
            }
            if ranges.len() >= MAX_FDES {
                break;
            }
        }
        ranges.sort_unstable();
        (!ranges.is_empty()).then_some(Self { ranges, segments: Segments::of(&elf) })
    }

    /// The file offset where the function holding file offset `offset` starts.
    pub fn start_of(&self, offset: u64) -> Option<u64> {
        let pc = self.segments.to_vaddr(offset)?;
        let i = self.ranges.partition_point(|&(start, _)| start <= pc).checked_sub(1)?;
        let (start, end) = self.ranges[i];
        if pc < end {
            self.segments.to_offset(start)
        } else {
            None
        }
    }

    /// The (start, end) virtual addresses of the FDE that covers virtual address `pc`.
    pub fn range_of(&self, pc: u64) -> Option<(u64, u64)> {
        let i = self.ranges.partition_point(|&(start, _)| start <= pc).checked_sub(1)?;
        let (start, end) = self.ranges[i];
        (pc < end).then_some((start, end))
    }

    pub fn len(&self) -> usize {
        self.ranges.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    use object::ObjectSymbol;

    use super::*;

    /// A C program built with `-O2` and stripped: each address of a function maps to that
    /// function's start, which is where the unstripped build's symbol says it starts.
    #[test]
    fn every_address_of_a_function_maps_to_its_start() {
        let dir = std::env::temp_dir().join(format!("autodump-fde-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let source = dir.join("two.c");
        std::fs::write(
            &source,
            "__attribute__((noinline)) long alpha(long n) { long x = 0; for (long i = 0; i < n; i++) x += i * i ^ (x >> 3); return x; }\n\
             __attribute__((noinline)) long beta(long n) { long x = 1; for (long i = 0; i < n; i++) x = x * 31 + i; return x; }\n\
             int main(int c, char **v) { (void)v; return (int)(alpha(c * 1000) + beta(c)); }\n",
        )
        .unwrap();
        let (full, stripped) = (dir.join("two"), dir.join("two-stripped"));
        let Ok(built) = Command::new("gcc").args(["-O2", "-o"]).arg(&full).arg(&source).status() else {
            crate::test_go::skip("no gcc");
            return;
        };
        assert!(built.success());
        assert!(Command::new("strip").arg("-o").arg(&stripped).arg(&full).status().unwrap().success());

        let data = std::fs::read(&full).unwrap();
        let elf = object::File::parse(&*data).unwrap();
        let starts = FunctionStarts::open(&stripped).expect("an .eh_frame");
        let symbol =
            |name: &str| elf.symbols().find(|s| s.name() == Ok(name)).map(|s| (s.address(), s.size())).unwrap();
        let to_offset = |va: u64| Segments::of(&elf).to_offset(va).unwrap();
        for name in ["alpha", "beta", "main"] {
            let (va, size) = symbol(name);
            let start = to_offset(va);
            for delta in (0..size).step_by(3) {
                assert_eq!(starts.start_of(start + delta), Some(start), "{name}+{delta}");
            }
        }
        assert_ne!(starts.start_of(to_offset(symbol("alpha").0)), starts.start_of(to_offset(symbol("beta").0)));
        assert!(FunctionStarts::parse(b"\x7fELF garbage").is_none());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
