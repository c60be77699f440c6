//! The set of watched processes in the kernel: `TARGETS` (by tgid), the `TARGET_BITS` filter
//! in front of it, and `EXITS`, where a process's last thread leaves its exit code. One probe set
//! records every process in the set.

use std::collections::BTreeSet;

use autodump_common::{target_bit, ExitInfo};
use aya::maps::{Array, HashMap, MapData, MapError};

use crate::collect::drain::ExitStatus;

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
