//! /proc/PID/maps: which file backs each address, so that stacks can be symbolized by file
//! offset (which still works after the process has exited) and pprof can list its mappings.

use std::sync::Arc;

/// One executable mapping of the target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mapping {
    pub start: u64,
    pub end: u64,
    /// Offset in the file of `start`.
    pub file_offset: u64,
    /// Path as the kernel shows it (" (deleted)" removed), or a pseudo name like "[vdso]".
    pub path: Arc<str>,
    /// The file's device (major << 32 | minor) and inode: which file it is, whatever the path.
    pub dev: u64,
    pub inode: u64,
}

/// The path given to executable memory no file backs (JIT code, trampolines).
pub const ANON_EXEC: &str = "[anon]";

impl Mapping {
    /// True for executable memory no file backs and the process did not name: JIT code.
    pub fn is_anonymous(&self) -> bool {
        &*self.path == ANON_EXEC || self.path.starts_with("[anon:")
    }

    /// True for mappings backed by a file that can be opened for symbols.
    pub fn is_file(&self) -> bool {
        self.path.starts_with('/')
    }

    /// The file name alone, for frames that cannot be symbolized: `libfoo.so+0x1234`.
    pub fn module(&self) -> &str {
        self.path.rsplit('/').next().unwrap_or(&self.path)
    }
}

/// What kind of memory an address is in: where a page fault grew the process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Region {
    /// The brk heap (`[heap]`).
    Heap,
    /// The main thread's stack (`[stack]`).
    Stack,
    /// A mapped file.
    File,
    /// Other anonymous memory: mmap'd arenas, Go's heap, thread stacks.
    Anon,
}

impl Region {
    fn of(path: &str) -> Self {
        match path {
            "[heap]" => Region::Heap,
            p if p.starts_with("[stack") => Region::Stack,
            p if p.starts_with('/') => Region::File,
            _ => Region::Anon,
        }
    }

    /// The pseudo frame that ends a page-fault stack.
    pub fn frame(region: Option<Self>) -> &'static str {
        match region {
            Some(Region::Heap) => "[heap]",
            Some(Region::Stack) => "[stack]",
            Some(Region::File) => "[file]",
            Some(Region::Anon) => "[anon]",
            // Unmapped again before the agent read the map.
            None => "[unmapped]",
        }
    }
}

/// Mappings a process no longer has that its map keeps (see `MemoryMap::merge`).
const MAX_GONE_MAPPINGS: usize = 64;

/// The executable mappings of one process, sorted by address, and the kind of every mapping as
/// last read.
#[derive(Clone, Debug, Default)]
pub struct MemoryMap {
    mappings: Vec<Mapping>,
    /// Mappings an earlier read had and a later one lost, most recently lost last.
    gone: std::collections::VecDeque<Mapping>,
    regions: Vec<(u64, u64, Region)>,
}

impl MemoryMap {
    /// Parses the text of /proc/PID/maps, keeping executable mappings only. Lines that do not
    /// parse are skipped: the file is read while the process changes it.
    pub fn parse(text: &str) -> Self {
        let mut mappings: Vec<Mapping> = text.lines().filter_map(parse_line).collect();
        mappings.sort_by_key(|m| m.start);
        let mut regions: Vec<(u64, u64, Region)> = text.lines().filter_map(parse_region).collect();
        regions.sort_by_key(|r| r.0);
        Self { mappings, gone: Default::default(), regions }
    }

    /// The kind of memory `addr` is in, as of the last read.
    pub fn region_of(&self, addr: u64) -> Option<Region> {
        let i = self.regions.partition_point(|r| r.0 <= addr);
        self.regions[..i].last().filter(|r| addr < r.1).map(|r| r.2)
    }

    pub fn read(pid: u32) -> std::io::Result<Self> {
        Ok(Self::parse(&std::fs::read_to_string(format!("/proc/{pid}/maps"))?))
    }

    /// The current mappings, by address, then those kept since they went.
    pub fn mappings(&self) -> impl Iterator<Item = &Mapping> {
        self.mappings.iter().chain(&self.gone)
    }

    pub fn find(&self, addr: u64) -> Option<&Mapping> {
        let i = self.mappings.partition_point(|m| m.start <= addr);
        let current = self.mappings[..i].last().filter(|m| addr < m.end);
        current.or_else(|| self.gone.iter().rev().find(|m| m.start <= addr && addr < m.end))
    }

    /// Takes `newer` and keeps the mappings of this map that it lost (a library unloaded since)
    /// for stacks recorded before: the `MAX_GONE_MAPPINGS` most recently lost, and none whose
    /// range a current mapping reuses. A process that loads and unloads libraries all the time
    /// does not grow its map for ever.
    pub fn merge(&mut self, newer: MemoryMap) {
        let mut gone = std::mem::take(&mut self.gone);
        gone.extend(self.mappings.drain(..).filter(|m| !newer.mappings.contains(m)));
        *self = newer;
        let reused = |m: &Mapping| self.mappings.iter().any(|n| n.start < m.end && m.start < n.end);
        gone.retain(|m| !reused(m));
        while gone.len() > MAX_GONE_MAPPINGS {
            gone.pop_front();
        }
        self.gone = gone;
    }

    pub fn len(&self) -> usize {
        self.mappings.len() + self.gone.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Any mapping's range and kind.
fn parse_region(line: &str) -> Option<(u64, u64, Region)> {
    let mut fields = line.splitn(6, ' ');
    let (start, end) = fields.next()?.split_once('-')?;
    let path = fields.nth(4).map(str::trim).unwrap_or("");
    let (start, end) = (u64::from_str_radix(start, 16).ok()?, u64::from_str_radix(end, 16).ok()?);
    (end > start).then(|| (start, end, Region::of(path)))
}

fn parse_line(line: &str) -> Option<Mapping> {
    // address perms offset dev inode [path]; the path may contain spaces.
    let mut fields = line.splitn(6, ' ');
    let range = fields.next()?;
    let perms = fields.next()?;
    let offset = fields.next()?;
    let dev = fields.next()?;
    let inode = fields.next()?.parse().ok()?;
    let path = fields.next().map(str::trim).unwrap_or("");
    if perms.as_bytes().get(2) != Some(&b'x') {
        return None;
    }
    // Executable memory no file backs: JIT code, walked by frame pointer and named from a
    // perf map.
    let path = if path.is_empty() { ANON_EXEC } else { path };
    let (start, end) = range.split_once('-')?;
    let start = u64::from_str_radix(start, 16).ok()?;
    let end = u64::from_str_radix(end, 16).ok()?;
    if end <= start {
        return None;
    }
    let path = path.strip_suffix(" (deleted)").unwrap_or(path);
    let (major, minor) = dev.split_once(':')?;
    let dev = u64::from_str_radix(major, 16).ok()? << 32 | u64::from_str_radix(minor, 16).ok()?;
    let file_offset = u64::from_str_radix(offset, 16).ok()?;
    Some(Mapping { start, end, file_offset, path: path.into(), dev, inode })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAPS: &str = "\
00400000-00401000 r--p 00000000 fe:01 123 /usr/bin/app
00401000-00402000 r-xp 00001000 fe:01 123 /usr/bin/app
7f0000000000-7f0000100000 r-xp 00020000 fe:01 456 /usr/lib/my lib.so (deleted)
7ffd00000000-7ffd00002000 r-xp 00000000 00:00 0                          [vdso]
7ffe00000000-7ffe00001000 rw-p 00000000 00:00 0 [stack]
7ffc00000000-7ffc00040000 rwxp 00000000 00:00 0 
garbage line
ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0                  [vsyscall]
";

    #[test]
    fn keeps_executable_mappings() {
        let map = MemoryMap::parse(MAPS);
        assert_eq!(map.len(), 5, "with the anonymous executable memory");
        let jit = map.find(0x7ffc00000100).unwrap();
        assert!(jit.is_anonymous() && !jit.is_file());
        assert_eq!(jit.module(), "[anon]");
        let app = map.find(0x401800).unwrap();
        assert_eq!((app.start, app.file_offset, app.module()), (0x401000, 0x1000, "app"));
        let lib = map.find(0x7f0000000010).unwrap();
        assert_eq!(&*lib.path, "/usr/lib/my lib.so");
        assert_eq!((lib.dev, lib.inode), (0xfe << 32 | 1, 456));
        assert!(lib.is_file());
        assert!(!map.find(0x7ffd00000001).unwrap().is_file());
        assert!(map.find(0x400800).is_none(), "not executable");
        assert!(map.find(0x402000).is_none(), "end is exclusive");
        assert!(map.find(0).is_none());
    }

    #[test]
    fn every_mapping_has_a_region() {
        let text = format!(
            "{MAPS}01000000-01100000 rw-p 00000000 00:00 0 [heap]\n7f1000000000-7f1000100000 rw-p 00000000 00:00 0\n"
        );
        let map = MemoryMap::parse(&text);
        assert_eq!(map.region_of(0x0100_0800), Some(Region::Heap));
        assert_eq!(map.region_of(0x7f10_0000_0001), Some(Region::Anon));
        assert_eq!(map.region_of(0x7ffe_0000_0010), Some(Region::Stack));
        assert_eq!(map.region_of(0x40_0800), Some(Region::File), "not executable, still a file");
        assert_eq!(map.region_of(0x10), None);
        assert_eq!(Region::frame(None), "[unmapped]");
    }

    #[test]
    fn merge_keeps_old_and_adds_new() {
        let mut map = MemoryMap::parse("00401000-00402000 r-xp 00001000 fe:01 123 /a\n");
        map.merge(MemoryMap::parse(
            "00501000-00502000 r-xp 00000000 fe:01 124 /b\n00401000-00402000 r-xp 00001000 fe:01 123 /a\n",
        ));
        assert_eq!(map.len(), 2);
        assert_eq!(&*map.find(0x401000).unwrap().path, "/a");
        assert_eq!(&*map.find(0x501000).unwrap().path, "/b");
        // /a unloaded and its range reused by /c: /a is forgotten, /b kept for old stacks.
        map.merge(MemoryMap::parse("00400000-00403000 r-xp 00000000 fe:01 125 /c\n"));
        assert_eq!(map.len(), 2);
        assert_eq!(&*map.find(0x401000).unwrap().path, "/c");
        assert_eq!(&*map.find(0x501000).unwrap().path, "/b");
    }

    #[test]
    fn merge_keeps_a_bounded_number_of_gone_mappings() {
        let mut map = MemoryMap::default();
        for i in 0..1000u64 {
            let start = 0x1000_0000 + i * 0x10000;
            map.merge(MemoryMap::parse(&format!(
                "{start:x}-{:x} r-xp 00000000 fe:01 {i} /lib{i}.so\n",
                start + 0x1000
            )));
        }
        assert_eq!(map.len(), MAX_GONE_MAPPINGS + 1);
    }
}
