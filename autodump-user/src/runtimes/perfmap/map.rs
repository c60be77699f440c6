//! A JIT runtime's perf map, `/tmp/perf-PID.map` (perf's `jit-interface.txt`): one line per
//! piece of generated code, `START SIZE NAME`, in hex with or without `0x` (perf's own format
//! has none; `jcmd PID Compiler.perfmap` writes it). The runtime appends as it compiles, so the
//! file is read on from where the last read stopped; a file replaced or cut short is read again
//! from its start. Code is freed and its addresses reused: a line overlapping earlier lines
//! replaces them.
//!
//! The file lies in a directory the target can write, so it is opened without following a
//! symbolic link, and trusted only when the target's uid owns it and nobody else may write it.
//! Memory is bounded: past `max_bytes`, the oldest lines are dropped (counted).

use std::{
    collections::{BTreeMap, VecDeque},
    io::{Read, Seek, SeekFrom},
    os::unix::fs::{MetadataExt, OpenOptionsExt},
    path::PathBuf,
    sync::Arc,
};

/// Bytes read from the file at one update at most: a huge map is taken in over several ticks.
const READ_CHUNK: u64 = 4 << 20;
/// Longer lines are skipped as malformed: no symbol name is this long.
const MAX_LINE: usize = 4096;
/// What one entry costs besides its name: the tree's node share, the order queue, the `Arc`.
const ENTRY_OVERHEAD: usize = 96;

#[derive(Debug, thiserror::Error)]
pub enum PerfMapError {
    #[error("{path} is owned by uid {owner}, not by the target's uid {uid}: not trusted, JIT frames stay unnamed")]
    NotOwned { path: String, owner: u32, uid: u32 },
    #[error("{path} may be written by other users (mode {mode:03o}): not trusted, JIT frames stay unnamed")]
    Writable { path: String, mode: u32 },
    #[error("{path} is not a regular file: JIT frames stay unnamed")]
    NotAFile { path: String },
    #[error("cannot read {path}: {source}")]
    Io { path: String, source: std::io::Error },
}

/// What a map's reads found, for the summary.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PerfMapStats {
    /// Lines read (each file's from its start), and those that did not parse.
    pub lines: u64,
    pub malformed: u64,
    /// Entries dropped, oldest first, to stay within the bound.
    pub left_out: u64,
    /// Times the file was replaced or cut short and read again from its start.
    pub rereads: u64,
}

struct Entry {
    end: u64,
    seq: u64,
    name: Arc<str>,
}

/// One process's perf map, as read so far.
pub struct PerfMap {
    /// Where the agent opens it (through the target's root), and what the target calls it.
    path: PathBuf,
    pub shown: String,
    uid: u32,
    /// The file read so far (device, inode), and how far.
    identity: Option<(u64, u64)>,
    offset: u64,
    partial: Vec<u8>,
    skipping_line: bool,
    entries: BTreeMap<u64, Entry>,
    /// (start, seq) in the order lines came: the oldest are dropped first.
    order: VecDeque<(u64, u64)>,
    seq: u64,
    bytes: usize,
    max_bytes: usize,
    pub stats: PerfMapStats,
}

impl PerfMap {
    /// The map of process `pid` (`ns_pid` in its own pid namespace), which runs as `uid`.
    pub fn new(pid: u32, ns_pid: u32, uid: u32, max_bytes: usize) -> Self {
        let shown = format!("/tmp/perf-{ns_pid}.map");
        Self {
            path: PathBuf::from(format!("/proc/{pid}/root{shown}")),
            shown,
            uid,
            identity: None,
            offset: 0,
            partial: Vec::new(),
            skipping_line: false,
            entries: BTreeMap::new(),
            order: VecDeque::new(),
            seq: 0,
            bytes: 0,
            max_bytes,
            stats: PerfMapStats::default(),
        }
    }

    /// A map read from `path` as is (tests, the fuzzer).
    pub fn at(path: PathBuf, uid: u32, max_bytes: usize) -> Self {
        let shown = path.display().to_string();
        Self { path, shown, ..Self::new(0, 0, uid, max_bytes) }
    }

    /// Reads the whole file again at the next update (the runtime rewrote it in place).
    pub fn reread(&mut self) {
        self.identity = None;
    }

    /// Entries held now.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether the file exists now.
    pub fn exists(&self) -> bool {
        std::fs::symlink_metadata(&self.path).is_ok()
    }

    /// Reads what the runtime added since the last call. Ok(true) when entries changed;
    /// Ok(false) when nothing did (no file yet, or no new line).
    pub fn update(&mut self) -> Result<bool, PerfMapError> {
        let shown = self.shown.clone();
        let io = |source| PerfMapError::Io { path: shown.clone(), source };
        let file =
            std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK).open(&self.path);
        let mut file = match file {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(io(e)),
        };
        let meta = file.metadata().map_err(io)?;
        self.check_trust(&meta)?;
        let identity = (meta.dev(), meta.ino());
        if self.identity != Some(identity) || meta.len() < self.offset {
            if self.identity.is_some() {
                self.stats.rereads += 1;
            }
            self.reset();
            self.identity = Some(identity);
        }
        if meta.len() == self.offset {
            return Ok(false);
        }
        file.seek(SeekFrom::Start(self.offset)).map_err(io)?;
        let mut chunk = Vec::new();
        let read = file.take(READ_CHUNK).read_to_end(&mut chunk).map_err(io)?;
        self.offset += read as u64;
        self.take(&chunk);
        Ok(read > 0)
    }

    fn check_trust(&self, meta: &std::fs::Metadata) -> Result<(), PerfMapError> {
        if !meta.is_file() {
            return Err(PerfMapError::NotAFile { path: self.shown.clone() });
        }
        if meta.uid() != self.uid {
            return Err(PerfMapError::NotOwned { path: self.shown.clone(), owner: meta.uid(), uid: self.uid });
        }
        if meta.mode() & 0o022 != 0 {
            return Err(PerfMapError::Writable { path: self.shown.clone(), mode: meta.mode() & 0o777 });
        }
        Ok(())
    }

    fn reset(&mut self) {
        self.offset = 0;
        self.partial.clear();
        self.skipping_line = false;
        self.entries.clear();
        self.order.clear();
        self.bytes = 0;
    }

    /// Takes bytes read from the file: whole lines now, the rest with the next read.
    pub fn take(&mut self, bytes: &[u8]) {
        let mut rest = bytes;
        while let Some(newline) = rest.iter().position(|&b| b == b'\n') {
            let (head, tail) = rest.split_at(newline);
            rest = &tail[1..];
            if std::mem::take(&mut self.skipping_line) {
                self.partial.clear();
                continue;
            }
            if self.partial.is_empty() {
                self.line(head);
            } else {
                let mut line = std::mem::take(&mut self.partial);
                line.extend_from_slice(head);
                self.line(&line);
            }
        }
        if self.skipping_line {
            return;
        }
        if self.partial.len() + rest.len() > MAX_LINE {
            self.partial.clear();
            self.skipping_line = true;
            self.stats.lines += 1;
            self.stats.malformed += 1;
        } else {
            self.partial.extend_from_slice(rest);
        }
    }

    fn line(&mut self, line: &[u8]) {
        self.stats.lines += 1;
        match parse_line(line) {
            Some((start, size, name)) => self.insert(start, size, name),
            None => self.stats.malformed += 1,
        }
    }

    /// Adds an entry; entries it overlaps are gone (their code was freed).
    fn insert(&mut self, start: u64, size: u64, name: &str) {
        let end = start.saturating_add(size.max(1));
        let before = self.entries.range(..start).next_back().filter(|(_, e)| e.end > start).map(|(k, _)| *k);
        let inside: Vec<u64> = self.entries.range(start..end).map(|(k, _)| *k).collect();
        for key in before.into_iter().chain(inside) {
            if let Some(e) = self.entries.remove(&key) {
                self.bytes -= e.name.len() + ENTRY_OVERHEAD;
            }
        }
        self.seq += 1;
        self.entries.insert(start, Entry { end, seq: self.seq, name: name.into() });
        self.order.push_back((start, self.seq));
        self.bytes += name.len() + ENTRY_OVERHEAD;
        while self.bytes + self.order.len() * 16 > self.max_bytes {
            let Some((start, seq)) = self.order.pop_front() else { break };
            if self.entries.get(&start).is_some_and(|e| e.seq == seq) {
                let e = self.entries.remove(&start).expect("just seen");
                self.bytes -= e.name.len() + ENTRY_OVERHEAD;
                self.stats.left_out += 1;
            }
        }
    }

    /// The name of the code at `addr`, if a line covers it.
    pub fn name(&self, addr: u64) -> Option<&Arc<str>> {
        let (_, e) = self.entries.range(..=addr).next_back()?;
        (addr < e.end).then_some(&e.name)
    }
}

/// `START SIZE NAME`: hex numbers with or without `0x`, the name the rest of the line.
fn parse_line(line: &[u8]) -> Option<(u64, u64, &str)> {
    let line = std::str::from_utf8(line).ok()?.trim_end_matches('\r');
    let mut fields = line.splitn(3, ' ');
    let hex = |s: &str| u64::from_str_radix(s.strip_prefix("0x").unwrap_or(s), 16).ok();
    let start = hex(fields.next()?)?;
    let size = hex(fields.next()?)?;
    let name = fields.next()?.trim();
    (!name.is_empty()).then_some((start, size, name))
}

/// The pid of `pid` in its own pid namespace, and its effective uid and gid (which own the files
/// it creates), from /proc/PID/status.
pub fn ns_pid_and_ids(pid: u32) -> Option<(u32, u32, u32)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| status.lines().find_map(|l| l.strip_prefix(name)).map(str::split_whitespace);
    let ns_pid = field("NSpid:").and_then(|f| f.last()?.parse().ok()).unwrap_or(pid);
    let uid = field("Uid:")?.nth(1)?.parse().ok()?;
    let gid = field("Gid:")?.nth(1)?.parse().ok()?;
    Some((ns_pid, uid, gid))
}

#[cfg(test)]
#[path = "map_tests.rs"]
mod tests;
