//! Which memory grew: the resident split from /proc/PID/status (anonymous, file, shared), the
//! resident size per mapping from /proc/PID/smaps (snapshots every `--smaps-every`, kept for
//! as long as a bundle reaches back), and the cgroup's `memory.stat` when it limits memory.

use std::{
    alloc::{GlobalAlloc, Layout, System},
    collections::BTreeMap,
    fs,
    io::Read,
    sync::atomic::{AtomicUsize, Ordering},
    time::Duration,
};

use serde::Serialize;

use super::cgroup;

/// A /proc file larger than this is garbage (or a process with absurdly many mappings): the
/// read stops there, and what was read is used.
const MAX_PROC_FILE: u64 = 64 << 20;
/// Mappings the summary lists, by growth.
pub const TOP_MAPPINGS: usize = 10;

/// Resident bytes by kind, from /proc/PID/status.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RssSplit {
    pub anon_bytes: u64,
    pub file_bytes: u64,
    pub shmem_bytes: u64,
}

pub fn parse_status_split(status: &str) -> Option<RssSplit> {
    let kib = |key: &str| -> Option<u64> {
        let line = status.lines().find(|l| l.starts_with(key))?;
        line[key.len()..].split_whitespace().next()?.parse::<u64>().ok()?.checked_mul(1024)
    };
    Some(RssSplit { anon_bytes: kib("RssAnon:")?, file_bytes: kib("RssFile:")?, shmem_bytes: kib("RssShmem:")? })
}

/// Bytes of heap the agent has allocated and not freed, as asked of the allocator (counted by
/// [`Counting`]: reading glibc's own count, `mallinfo2`, walks its free lists, and naming
/// reads it around every batch). What `--memory-budget` bounds.
pub fn heap_in_use() -> usize {
    IN_USE.load(Ordering::Relaxed)
}

static IN_USE: AtomicUsize = AtomicUsize::new(0);

/// The system allocator, counting the bytes it hands out.
struct Counting;

// SAFETY: every call is passed to the system allocator unchanged; only a counter is kept beside.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract for `alloc`, passed on.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            IN_USE.fetch_add(layout.size(), Ordering::Relaxed);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract for `alloc_zeroed`, passed on.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            IN_USE.fetch_add(layout.size(), Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract for `dealloc`, passed on.
        unsafe { System.dealloc(ptr, layout) };
        IN_USE.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller's contract for `realloc`, passed on.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            IN_USE.fetch_add(new_size, Ordering::Relaxed);
            IN_USE.fetch_sub(layout.size(), Ordering::Relaxed);
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// A size field of the agent's own /proc/self/status (`VmRSS:`, `VmHWM:`), in MiB.
pub fn own_status_mib(key: &str) -> f64 {
    let status = read_bounded("/proc/self/status").unwrap_or_default();
    let kib = status.lines().find_map(|l| l.strip_prefix(key)).and_then(|v| v.split_whitespace().next()?.parse().ok());
    kib.map_or(0.0, |k: f64| k / 1024.0)
}

pub fn read_split(pid: u32) -> Option<RssSplit> {
    parse_status_split(&read_bounded(&format!("/proc/{pid}/status"))?)
}

/// A process whose stat shows the same size and resident pages has its statm read this often:
/// on a host of 500 calm processes, a read each turn was a twentieth of the agent's time.
const STATM_EVERY_S: f64 = 30.0;

/// statm's resident and shared pages (its second and third fields).
fn parse_statm_pages(text: &str) -> Option<(u64, u64)> {
    let mut fields = text.split_whitespace().skip(1).map(|f| f.parse::<u64>().ok());
    Some((fields.next()??, fields.next()??))
}

fn read_bounded(path: &str) -> Option<String> {
    let mut text = String::new();
    fs::File::open(path).ok()?.take(MAX_PROC_FILE).read_to_string(&mut text).ok()?;
    Some(text)
}

/// Resident bytes per mapping name (the file, `[heap]`, `[stack]`, `[anon]` for unnamed
/// anonymous memory, `[anon:NAME]` as the process named it), with how many mappings share it.
pub type MappingRss = BTreeMap<String, (u64, u32)>;

/// Sums `Rss:` per mapping name. Lines that do not parse are skipped and counted.
pub fn parse_smaps(smaps: &str) -> (MappingRss, u64) {
    let (mut by_name, mut garbage) = (MappingRss::new(), 0u64);
    let mut current: Option<String> = None;
    for line in smaps.lines() {
        let mut fields = line.split_whitespace();
        let Some(first) = fields.next() else { continue };
        if first.contains('-') && !first.ends_with(':') {
            // A mapping's header: range perms offset dev inode [name].
            let name = fields.nth(4).map(|_| line.splitn(6, char::is_whitespace).last().unwrap_or("").trim());
            current = Some(match name {
                Some(n) if !n.is_empty() => n.to_string(),
                _ => "[anon]".into(),
            });
        } else if first == "Rss:" {
            let kib = fields.next().and_then(|v| v.parse::<u64>().ok()).and_then(|v| v.checked_mul(1024));
            match (&current, kib) {
                (Some(name), Some(bytes)) => {
                    let entry = by_name.entry(name.clone()).or_default();
                    entry.0 = entry.0.saturating_add(bytes);
                    entry.1 += 1;
                }
                _ => garbage += 1,
            }
        }
    }
    (by_name, garbage)
}

/// One mapping name's growth over a window.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MappingGrowth {
    pub mapping: String,
    /// Mappings of this name at the window's end.
    pub mappings: u32,
    pub rss_start_bytes: u64,
    pub rss_end_bytes: u64,
    pub grown_bytes: i64,
}

/// The mappings whose resident size grew most from `before` to `after`, largest first.
pub fn top_growth(before: &MappingRss, after: &MappingRss, top: usize) -> Vec<MappingGrowth> {
    let mut grown: Vec<MappingGrowth> = after
        .iter()
        .map(|(name, &(end, mappings))| {
            let start = before.get(name).map_or(0, |b| b.0);
            MappingGrowth {
                mapping: name.clone(),
                mappings,
                rss_start_bytes: start,
                rss_end_bytes: end,
                grown_bytes: end as i64 - start as i64,
            }
        })
        .filter(|g| g.grown_bytes > 0)
        .collect();
    grown.sort_by(|a, b| b.grown_bytes.cmp(&a.grown_bytes).then_with(|| a.mapping.cmp(&b.mapping)));
    grown.truncate(top);
    grown
}

/// The summary's `memory` section.
#[derive(Clone, Debug, Default, Serialize)]
pub struct MemoryReport {
    /// /proc/PID/status at the window's start (the nearest metric sample) and end.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rss_start: Option<RssSplit>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rss_end: Option<RssSplit>,
    /// When the smaps snapshot the growth is measured from was read (Unix seconds), and the end.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mappings_from: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mappings_to: Option<f64>,
    /// The mappings that grew most, by name.
    pub grown_mappings: Vec<MappingGrowth>,
    /// smaps lines that could not be read.
    #[serde(skip_serializing_if = "is_zero")]
    pub unreadable_smaps_lines: u64,
    /// The cgroup's memory accounting, when a cgroup limits the process's memory.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<CgroupMemory>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct CgroupMemory {
    pub path: String,
    pub limit_bytes: u64,
    /// `memory.stat`: every numeric key, as the kernel names it.
    pub stat: BTreeMap<String, u64>,
}

/// `key value` lines; others are skipped.
pub fn parse_memory_stat(text: &str) -> BTreeMap<String, u64> {
    text.lines()
        .filter_map(|l| {
            let (key, value) = l.split_once(' ')?;
            Some((key.to_string(), value.trim().parse().ok()?))
        })
        .collect()
}

/// The memory.stat of the cgroup that limits `pid`, if one does.
fn cgroup_memory(pid: u32) -> Option<CgroupMemory> {
    let paths = cgroup::parse_proc_cgroup(&read_bounded(&format!("/proc/{pid}/cgroup"))?);
    let limited = |dir: &str, limit_file: &str| {
        let limit = cgroup::parse_limit(&read_bounded(&format!("{dir}/{limit_file}"))?)?;
        let stat = parse_memory_stat(&read_bounded(&format!("{dir}/memory.stat"))?);
        Some(CgroupMemory { path: dir.to_string(), limit_bytes: limit, stat })
    };
    let v2 = paths
        .v2
        .as_deref()
        .and_then(|p| cgroup::V2_ROOTS.iter().find_map(|root| limited(&format!("{root}{p}"), "memory.max")));
    v2.or_else(|| {
        let p = paths.v1_memory.as_deref()?;
        limited(&format!("{}{p}", cgroup::V1_MEMORY_ROOT), "memory.limit_in_bytes")
    })
}

/// Keeps smaps snapshots of one process for as long as bundles reach back.
pub struct MemoryWatch {
    pid: u32,
    every: Duration,
    keep_s: f64,
    snapshots: std::collections::VecDeque<(f64, MappingRss)>,
    /// /proc/PID/status's split at every observation.
    splits: std::collections::VecDeque<(f64, RssSplit)>,
    /// The resident size when smaps was last read.
    smaps_rss: Option<u64>,
    /// /proc/PID/statm's resident and shared pages when status was last read.
    statm: Option<(u64, u64)>,
    /// The process's size and resident pages as its stat said when statm was last read, and
    /// when (see `observe`).
    shape: Option<((u64, u64), f64)>,
    garbage: u64,
}

/// smaps is read again once the resident size moved by this much (or 2%) since the last read.
const SMAPS_RESIDENT_CHANGE: u64 = 1 << 20;

impl MemoryWatch {
    pub fn new(pid: u32, every: Duration, keep_s: f64) -> Self {
        Self {
            pid,
            every,
            keep_s,
            snapshots: Default::default(),
            splits: Default::default(),
            smaps_rss: None,
            statm: None,
            shape: None,
            garbage: 0,
        }
    }

    /// The resident split as last read.
    pub fn latest_split(&self) -> Option<RssSplit> {
        self.splits.back().map(|s| s.1)
    }

    /// Reads the resident split, and smaps if the last snapshot is `every` old (call each tick).
    /// `shape`: the process's size and resident pages from this interval's stat; while they
    /// stay, statm is read only every [`STATM_EVERY_S`] (the split's parts can trade pages
    /// without the sum moving).
    pub fn observe(&mut self, now: f64, shape: Option<(u64, u64)>) {
        if let Some(split) = self.read_split(now, shape) {
            self.splits.push_back((now, split));
        }
        while self.splits.front().is_some_and(|(t, _)| *t < now - self.keep_s) {
            self.splits.pop_front();
        }
        if self.snapshots.back().is_some_and(|(t, _)| now - t < self.every.as_secs_f64()) {
            return;
        }
        // smaps walks every page table of the process: read it again only once the resident
        // size moved, else the last snapshot still says what each mapping holds. A calm process
        // is read once, not every `every`.
        let resident = |s: &RssSplit| s.anon_bytes + s.file_bytes + s.shmem_bytes;
        let rss_now = self.latest_split().map(|s| resident(&s));
        if let (Some(now_rss), Some(then_rss)) = (rss_now, self.smaps_rss) {
            if now_rss.abs_diff(then_rss) < SMAPS_RESIDENT_CHANGE.max(then_rss / 50) {
                return;
            }
        }
        self.smaps_rss = rss_now;
        if let Some(snapshot) = self.read() {
            self.snapshots.push_back((now, snapshot));
        }
        while self.snapshots.len() > 2 && self.snapshots.get(1).is_some_and(|(t, _)| *t < now - self.keep_s) {
            self.snapshots.pop_front();
        }
    }

    /// The resident split. status costs several times statm (it formats some fifty fields):
    /// it is read again only once statm's resident or shared pages moved, whose sum and
    /// difference the split is, else the last split still holds.
    fn read_split(&mut self, now: f64, shape: Option<(u64, u64)>) -> Option<RssSplit> {
        if let (Some(shape), Some((then, at)), Some(split)) = (shape, self.shape, self.latest_split()) {
            if shape == then && now - at < STATM_EVERY_S {
                return Some(split);
            }
        }
        self.shape = shape.map(|s| (s, now));
        let statm = read_bounded(&format!("/proc/{}/statm", self.pid)).and_then(|t| parse_statm_pages(&t));
        if let (Some(now), Some(then), Some(split)) = (statm, self.statm, self.latest_split()) {
            if now == then {
                return Some(split);
            }
        }
        let split = read_split(self.pid)?;
        self.statm = statm;
        Some(split)
    }

    fn read(&mut self) -> Option<MappingRss> {
        let (by_name, garbage) = parse_smaps(&read_bounded(&format!("/proc/{}/smaps", self.pid))?);
        self.garbage += garbage;
        Some(by_name)
    }

    /// The memory section for a window that began at `start`: the growth from the last snapshot
    /// at or before it (else the first after) to now.
    pub fn report(&mut self, start: f64, now: f64) -> MemoryReport {
        let at_start = |t: f64| t <= start + 0.5;
        let rss_start = self.splits.iter().rev().find(|s| at_start(s.0)).or(self.splits.front()).map(|s| s.1);
        let base = self.snapshots.iter().rev().find(|s| at_start(s.0)).or(self.snapshots.front()).cloned();
        // A process that is gone (an exit bundle) is measured to its last snapshot.
        let end = self.read().map(|m| (now, m)).or_else(|| self.snapshots.back().cloned());
        let grown = match (&base, &end) {
            (Some((_, before)), Some((_, after))) => top_growth(before, after, TOP_MAPPINGS),
            _ => Vec::new(),
        };
        MemoryReport {
            rss_start,
            rss_end: read_split(self.pid).or(self.latest_split()),
            mappings_from: base.map(|(t, _)| t),
            mappings_to: end.map(|(t, _)| t),
            grown_mappings: grown,
            unreadable_smaps_lines: self.garbage,
            cgroup: cgroup_memory(self.pid),
        }
    }
}

#[cfg(test)]
#[path = "memory_tests.rs"]
mod tests;
