//! Each watched process's mapping table in the kernel: a pair of slots per process, written in
//! turn (a walk in flight reads the one the process points at while the agent writes the other),
//! the pairs no process uses kept in a list.

use std::collections::HashMap;

use autodump_common::unwind::{MappingEntry, ProcMappings, MAX_MAPPINGS};

use crate::probes::MappingMaps;

#[derive(Debug, thiserror::Error)]
pub enum SlotError {
    #[error("more watched processes than the mapping tables hold")]
    Full,
    #[error(transparent)]
    Write(#[from] aya::maps::MapError),
}

pub struct MappingSlots {
    /// Pairs of slots in the kernel: one per process.
    pairs: u32,
    /// The first slots of the pairs no process uses, lowest last: with more processes than
    /// pairs, looking for one among every process's at each refresh was a fifth of the agent's
    /// time on a host of 1,000.
    free: Vec<u32>,
    /// Per tgid: the mappings last written, and the slot they are in.
    written: HashMap<u32, (Vec<MappingEntry>, u32)>,
    maps: Option<MappingMaps>,
}

impl MappingSlots {
    pub fn new(processes: u32) -> Self {
        let free = (0..2 * processes).step_by(2).rev().collect();
        Self { pairs: processes, free, written: HashMap::new(), maps: None }
    }

    /// The probes' maps, loaded.
    pub fn attach(&mut self, maps: MappingMaps) {
        self.maps = Some(maps);
    }

    /// What the slots take in the kernel.
    pub fn kernel_bytes(&self) -> usize {
        2 * self.pairs as usize * MAX_MAPPINGS * size_of::<MappingEntry>()
    }

    /// `pid`'s mappings as the probes have them.
    pub fn entries(&self, pid: u32) -> Option<&[MappingEntry]> {
        Some(&self.written.get(&pid)?.0)
    }

    /// Frees `pid`'s pair.
    pub fn forget(&mut self, pid: u32) {
        if let Some((_, slot)) = self.written.remove(&pid) {
            self.free.push(slot & !1);
            if let Some(maps) = self.maps.as_mut() {
                let _ = maps.processes.remove(&pid);
            }
        }
    }

    /// Writes `entries` as `pid`'s table, unless they are what it holds already: into the other
    /// slot of its pair, or a free pair's first. Before the probes load, nothing (`attach`'s
    /// caller writes what it prepared).
    pub fn write(&mut self, pid: u32, entries: Vec<MappingEntry>) -> Result<(), SlotError> {
        let Some(maps) = self.maps.as_mut() else { return Ok(()) };
        let previous = match self.written.get(&pid) {
            Some((written, _)) if *written == entries => return Ok(()),
            Some((_, slot)) => Some(*slot),
            None => None,
        };
        let slot = previous.map(|s| s ^ 1).or_else(|| self.free.pop()).ok_or(SlotError::Full)?;
        if let Err(e) = maps.write(pid, slot, &entries) {
            if previous.is_none() {
                self.free.push(slot);
            }
            return Err(e.into());
        }
        self.written.insert(pid, (entries, slot));
        Ok(())
    }
}

impl MappingMaps {
    /// Writes `entries` into `slot`, then points `pid` at it.
    fn write(&mut self, pid: u32, slot: u32, entries: &[MappingEntry]) -> Result<(), aya::maps::MapError> {
        let base = slot * MAX_MAPPINGS as u32;
        for (i, entry) in entries.iter().enumerate() {
            self.entries.set(base + i as u32, entry, 0)?;
        }
        // Never 0, which the probes read as "no table".
        self.version = self.version.wrapping_add(1).max(1);
        let table = ProcMappings { slot, count: entries.len() as u32, version: self.version, reserved: 0 };
        self.processes.insert(pid, table, 0)
    }
}
