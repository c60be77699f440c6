//! The set of watched processes in the kernel: `TARGETS` (by tgid), the `TARGET_BITS` filter
//! in front of it, and `EXITS`, where a process's last thread leaves its exit code. One probe set
//! records every process in the set.

use std::collections::BTreeSet;

use autodump_common::{target_bit, ExitInfo};
use aya::maps::{Array, HashMap, MapData, MapError};

use serde::Serialize;

pub struct TargetMaps {
    pub(super) set: HashMap<MapData, u32, u32>,
    pub(super) bits: Array<MapData, u64>,
    pub(super) exits: HashMap<MapData, u32, ExitInfo>,
    watched: BTreeSet<u32>,
}

impl TargetMaps {
    pub(super) fn new(
        set: HashMap<MapData, u32, u32>,
        bits: Array<MapData, u64>,
        exits: HashMap<MapData, u32, ExitInfo>,
    ) -> Self {
        Self { set, bits, exits, watched: BTreeSet::new() }
    }

    /// Starts recording process `tgid`.
    pub fn add(&mut self, tgid: u32) -> Result<(), MapError> {
        // An exit left by an earlier process with this pid is not this one's.
        let _ = self.exits.remove(&tgid);
        self.watched.insert(tgid);
        self.write_word(tgid)?;
        self.set.insert(tgid, 1, 0)
    }

    /// Stops recording process `tgid` and forgets how it ended.
    pub fn remove(&mut self, tgid: u32) -> Result<(), MapError> {
        self.watched.remove(&tgid);
        let _ = self.set.remove(&tgid);
        let _ = self.exits.remove(&tgid);
        self.write_word(tgid)
    }

    /// How process `tgid` ended, once its last thread has exited.
    pub fn exit_status(&self, tgid: u32) -> Option<ExitStatus> {
        let info = self.exits.get(&tgid, 0).ok()?;
        (info.seen != 0).then(|| ExitStatus::from_exit_code(info.exit_code))
    }

    /// Rewrites the filter word of `tgid` from the watched set (others may share the word).
    fn write_word(&mut self, tgid: u32) -> Result<(), MapError> {
        let (word, _) = target_bit(tgid);
        let value =
            self.watched.iter().map(|&t| target_bit(t)).filter(|(w, _)| *w == word).fold(0, |acc, (_, b)| acc | b);
        self.bits.set(word, value, 0)
    }
}

/// How a process ended: killed by `signal`, or exited with `code`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct ExitStatus {
    pub code: Option<i32>,
    pub signal: Option<i32>,
    pub core_dumped: bool,
}

impl ExitStatus {
    /// Decodes `task_struct::exit_code` (the wait(2) status layout).
    pub fn from_exit_code(raw: u32) -> Self {
        let signal = (raw & 0x7f) as i32;
        if signal == 0 {
            Self { code: Some(((raw >> 8) & 0xff) as i32), signal: None, core_dumped: false }
        } else {
            Self { code: None, signal: Some(signal), core_dumped: raw & 0x80 != 0 }
        }
    }

    /// A non-zero exit or death by a signal.
    pub fn is_abnormal(&self) -> bool {
        self.signal.is_some() || self.code != Some(0)
    }
}

#[cfg(test)]
mod tests {
    use super::ExitStatus;

    #[test]
    fn decodes_exit_codes() {
        assert_eq!(ExitStatus::from_exit_code(0), ExitStatus { code: Some(0), signal: None, core_dumped: false });
        assert_eq!(ExitStatus::from_exit_code(3 << 8), ExitStatus { code: Some(3), signal: None, core_dumped: false });
        assert_eq!(
            ExitStatus::from_exit_code(11 | 0x80),
            ExitStatus { code: None, signal: Some(11), core_dumped: true }
        );
        assert_eq!(ExitStatus::from_exit_code(9).signal, Some(9));
        assert!(!ExitStatus::from_exit_code(0).is_abnormal());
        assert!(ExitStatus::from_exit_code(1 << 8).is_abnormal());
        assert!(ExitStatus::from_exit_code(6).is_abnormal());
    }
}
