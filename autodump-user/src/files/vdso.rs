//! The vDSO (`clock_gettime`, `gettimeofday`, ... without a syscall) is not a file, so a target's
//! `[vdso]` frames cannot be looked up on disk. It is the same image in every 64-bit process of
//! one kernel, and the agent has it mapped too: its symbols come from the agent's own copy,
//! named as perf names them (`__vdso_clock_gettime` rather than its alias `clock_gettime`).

use object::{Object, ObjectSegment, ObjectSymbol};

pub struct Vdso {
    /// (start offset in the image, size, name), sorted by start.
    symbols: Vec<(u64, u64, String)>,
}

impl Vdso {
    /// The symbols of this process's vDSO; None if it has none or cannot be read.
    pub fn own() -> Option<Self> {
        Self::parse(own_image()?)
    }

    /// The function symbols of a vDSO image, relative to its first loaded byte.
    pub fn parse(image: &[u8]) -> Option<Self> {
        let elf = object::File::parse(image).ok()?;
        let base = elf.segments().map(|s| s.address()).min()?;
        let mut symbols: Vec<(u64, u64, String)> = elf
            .dynamic_symbols()
            .filter(|s| s.kind() == object::SymbolKind::Text && s.address() >= base)
            .filter_map(|s| Some((s.address() - base, s.size(), s.name().ok()?.to_string())))
            .collect();
        // Aliases share an address: keep the `__vdso_` name, as perf shows it.
        symbols.sort_by_key(|(start, _, name)| (*start, !name.starts_with("__vdso_")));
        symbols.dedup_by_key(|(start, _, _)| *start);
        (!symbols.is_empty()).then_some(Self { symbols })
    }

    /// The function at `offset` from the start of the image.
    pub fn name(&self, offset: u64) -> Option<&str> {
        let i = self.symbols.partition_point(|(start, _, _)| *start <= offset).checked_sub(1)?;
        let (start, size, name) = &self.symbols[i];
        (offset < start + (*size).max(1)).then_some(name.as_str())
    }
}

/// This process's vDSO image (the same in every 64-bit process of this kernel).
pub fn own_image() -> Option<&'static [u8]> {
    // SAFETY: getauxval has no preconditions.
    let base = unsafe { libc::getauxval(libc::AT_SYSINFO_EHDR) };
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    let line = maps.lines().find(|l| l.ends_with("[vdso]"))?;
    let (start, end) = line.split_whitespace().next()?.split_once('-')?;
    let (start, end) = (u64::from_str_radix(start, 16).ok()?, u64::from_str_radix(end, 16).ok()?);
    if base != start || end <= start {
        return None;
    }
    // SAFETY: the kernel maps the vDSO readable for the whole life of the process, over
    // exactly this range.
    Some(unsafe { std::slice::from_raw_parts(start as *const u8, (end - start) as usize) })
}

#[cfg(test)]
mod tests {
    use super::Vdso;

    #[test]
    fn names_clock_gettime_as_perf_does() {
        let vdso = Vdso::own().expect("this process has a vDSO");
        let (start, _, _) =
            vdso.symbols.iter().find(|(_, _, n)| n == "__vdso_clock_gettime").expect("clock_gettime").clone();
        assert_eq!(vdso.name(start + 3), Some("__vdso_clock_gettime"));
        assert!(vdso.symbols.iter().all(|(_, _, n)| n != "clock_gettime"), "the alias is folded into __vdso_");
        assert_eq!(Vdso::parse(b"garbage").map(|_| ()), None);
    }
}
