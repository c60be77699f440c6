//! Struct layouts of the Go runtime by Go version, for binaries without DWARF (`-ldflags=-w`):
//! the binary's version comes from its build info (`.go.buildinfo`, which the linker always
//! writes), and the offsets from this table. Each entry was read from the DWARF of a build by
//! that Go version, and the tests check every entry against the DWARF of every Go the tests can
//! get (`layouts_match_dwarf`). A version between two entries takes the older entry, and says
//! so: the reader's first count checks it, and a wrong layout makes the goroutines unavailable
//! with the reason, never a wrong count passed off as right.

use object::{Object, ObjectSection};

use super::gopclntab::varint;
use super::{shape::Offsets, GoError};

/// The build info's magic, then pointer size and flags; with flag 2 the version string follows
/// the 32-byte header inline (Go 1.18+).
const BUILDINFO_MAGIC: &[u8] = b"\xff Go buildinf:";
const FLAG_VERSION_INLINE: u8 = 2;

/// (major, minor) of the Go that built a binary, from its `.go.buildinfo` section's contents.
pub fn go_version(buildinfo: &[u8]) -> Option<(u32, u32)> {
    if !buildinfo.starts_with(BUILDINFO_MAGIC) || buildinfo.get(15)? & FLAG_VERSION_INLINE == 0 {
        return None;
    }
    let (len, n) = varint(buildinfo.get(32..)?)?;
    let start = 32 + n;
    let version = std::str::from_utf8(buildinfo.get(start..start.checked_add(usize::try_from(len).ok()?)?)?).ok()?;
    let mut parts = version.strip_prefix("go")?.split(|c: char| !c.is_ascii_digit());
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

/// A table entry: the offsets the reader needs, and `schedt.lock`'s (to find `sched` from the
/// `&sched.lock` that `runtime.mcommoninit` takes).
pub struct Entry {
    pub since: (u32, u32),
    pub offsets: fn() -> Offsets,
    pub sched_lock: u64,
}

/// Oldest first.
pub const TABLE: &[Entry] = &[
    Entry { since: (1, 19), offsets: go_1_19, sched_lock: 24 },
    Entry { since: (1, 24), offsets: go_1_24, sched_lock: 24 },
    Entry { since: (1, 27), offsets: go_1_27, sched_lock: 32 },
];

/// Debian 12's Go 1.19.
fn go_1_19() -> Offsets {
    Offsets {
        g_size: 392,
        g_stack_lo: 0,
        g_stack_hi: 8,
        g_sched_pc: 64,
        g_sched_bp: 104,
        g_status: 144,
        g_waitreason: 176,
        g_startpc: 312,
        g_goid: 152,
        g_waitsince: 168,
        g_trackingseq: 189,
        g_syscallsp: Some(112),
        sched_gfree: vec![176],
        sched_ngsys: 72,
        p_gfree_n: 2472,
    }
}

/// Go 1.24 (Debian 13).
fn go_1_24() -> Offsets {
    Offsets {
        g_size: 440,
        g_stack_lo: 0,
        g_stack_hi: 8,
        g_sched_pc: 64,
        g_sched_bp: 104,
        g_status: 152,
        g_waitreason: 184,
        g_startpc: 304,
        g_goid: 160,
        g_waitsince: 176,
        g_trackingseq: 199,
        g_syscallsp: None,
        sched_gfree: vec![184],
        sched_ngsys: 72,
        p_gfree_n: 2464,
    }
}

/// Go 1.27 (Debian unstable): `g` grew, `gFree` counts are list sizes.
fn go_1_27() -> Offsets {
    Offsets {
        g_size: 456,
        g_stack_lo: 0,
        g_stack_hi: 8,
        g_sched_pc: 64,
        g_sched_bp: 96,
        g_status: 144,
        g_waitreason: 176,
        g_startpc: 304,
        g_goid: 152,
        g_waitsince: 168,
        g_trackingseq: 191,
        g_syscallsp: None,
        sched_gfree: vec![200, 216],
        sched_ngsys: 96,
        p_gfree_n: 2472,
    }
}

/// The entry for Go `version`: the newest entry not newer than it.
pub fn entry(version: (u32, u32)) -> Option<&'static Entry> {
    TABLE.iter().rev().find(|e| e.since <= version)
}

/// Words in a `memRecordCycle` of the heap profile: allocs, frees, alloc_bytes and free_bytes
/// until Go 1.25; allocs and frees since (bytes are counts times the bucket's object size).
/// From the binary's DWARF when it has one, else from its Go version.
pub fn heap_cycle_words(elf: &object::File<'_>, layout: Option<&super::layout::Layout>) -> u64 {
    if let Some(size) = layout.and_then(|l| l.size("runtime.memRecordCycle").ok()).filter(|&s| s > 0) {
        return size / 8;
    }
    let info = elf.section_by_name(".go.buildinfo").and_then(|s| s.data().ok());
    match info.and_then(go_version) {
        Some(version) if version >= NARROW_HEAP_RECORDS => 2,
        _ => 4,
    }
}

/// The first Go whose heap-profile records hold counts only (checked: 1.24 has four words,
/// 1.27 two).
const NARROW_HEAP_RECORDS: (u32, u32) = (1, 26);

/// Struct layouts for a binary without DWARF, from the table for its Go version (versions.rs),
/// with `schedt.lock`'s offset.
pub fn offsets_of(elf: &object::File<'_>) -> Result<(Offsets, Option<u64>), GoError> {
    let info = elf.section_by_name(".go.buildinfo").and_then(|s| s.data().ok());
    let version =
        info.and_then(go_version).ok_or_else(|| GoError::NoLayout("no Go version in its build info".into()))?;
    let entry = entry(version)
        .ok_or_else(|| GoError::NoLayout(format!("Go {}.{} is older than every layout known", version.0, version.1)))?;
    if entry.since != version {
        tracing::info!(
            "Go {}.{} without DWARF: runtime struct layouts assumed from Go {}.{} (checked by the first count)",
            version.0,
            version.1,
            entry.since.0,
            entry.since.1
        );
    }
    Ok(((entry.offsets)(), Some(entry.sched_lock)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_version_from_build_info() {
        let mut info = BUILDINFO_MAGIC.to_vec();
        info.extend_from_slice(&[8, FLAG_VERSION_INLINE]);
        info.resize(32, 0);
        info.push(9);
        info.extend_from_slice(b"go1.27.3x");
        assert_eq!(go_version(&info), Some((1, 27)));
        info[15] = 0;
        assert_eq!(go_version(&info), None, "pre-1.18 layout");
        assert_eq!(go_version(b"garbage"), None);
        // A length that would run past the end of memory.
        let mut huge = BUILDINFO_MAGIC.to_vec();
        huge.extend_from_slice(&[8, FLAG_VERSION_INLINE]);
        huge.resize(32, 0);
        huge.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]);
        assert_eq!(go_version(&huge), None);
    }
}
