//! What the symbolizer asks of a language runtime in one process (see `runtimes::seam`): names
//! for the frames its probe module put in stacks (entries of its frame kind) and for code it
//! runs in memory no file backs (a JIT's), and how its stacks read best.

use std::sync::Arc;

use super::Location;
use crate::collect::maps::Mapping;

/// When a runtime is asked what changed since it last named code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Update {
    /// Once an interval, before the drain is named.
    Tick,
    /// The drain has addresses in memory no file backs that are not named yet.
    Unnamed,
    /// A bundle is about to be written; `alive`: the process can still be asked.
    Bundle { alive: bool },
}

pub trait RuntimeNames {
    /// The frame kind of the entries it names (`autodump_common::runtimes::kind`), if any.
    fn kind(&self) -> Option<u8> {
        None
    }
    /// The location of `entry`, a frame of its kind, read from the process now.
    fn frame(&mut self, entry: u64) -> Option<Location> {
        let _ = entry;
        None
    }
    /// Whether it names code in memory no file backs.
    fn names_anonymous(&self) -> bool {
        false
    }
    /// A name for `address`, in memory no file backs (`mapping`, if any), when it has one.
    fn anonymous(&mut self, address: u64, mapping: Option<&Mapping>) -> Option<Location> {
        let _ = (address, mapping);
        None
    }
    /// Reads what the runtime published since it was last asked; returns the addresses whose
    /// names went stale (named again when next seen).
    fn update(&mut self, pid: u32, when: Update) -> Vec<u64> {
        let _ = (pid, when);
        Vec::new()
    }
    /// Forgets what it named (the process's names were dropped for the memory budget).
    fn clear(&mut self) {}
    /// A named user stack (innermost first) as readers want it: its frames standing in for the
    /// interpreter's, or cut where its stacks start.
    fn tidy(&self, stack: Vec<Arc<Location>>) -> Vec<Arc<Location>> {
        stack
    }
    /// A pseudo frame set at the root of a thread's off-CPU stack when the runtime parked the
    /// thread idle: its time is not the program's waiting.
    fn idle_root(&self, user: &[Arc<Location>]) -> Option<&'static str> {
        let _ = user;
        None
    }
}
