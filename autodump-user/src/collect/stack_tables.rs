//! Raw stacks read out of retired stack-map generations, kept as long as a blocked thread may
//! still refer to them.
//!
//! A thread's off-CPU stack ids are taken when it blocks, in the stack map of the epoch then
//! active, but its time is added when it wakes, possibly several drains later, after that
//! stack map was read and cleared. So the agent keeps:
//! - every stack of the epoch it just retired, for one more drain (a thread that blocked just
//!   before the flip and woke just after it is counted into the next generation);
//! - of older epochs, only the stacks that blocked threads referred to at this drain or the
//!   previous one (a thread seen blocked at drain N and woken after the flip of drain N+1 is
//!   counted into the generation drained at N+2).
//!
//! Memory is bounded by the stacks of one interval plus one stack per blocked thread.

use std::{collections::HashSet, sync::Arc};

/// A stack as the kernel recorded it: instruction pointers, innermost first.
pub type Frames = Arc<[u64]>;

/// (epoch, stack id): the name of one stack in one generation.
pub type StackRef = (u32, u32);

#[derive(Debug, Default)]
pub struct StackTables {
    kept: foldhash::HashMap<StackRef, Frames>,
    previous_refs: HashSet<StackRef>,
}

impl StackTables {
    /// Adds every stack of the generation `epoch`, just read out of the kernel.
    pub fn retire(&mut self, epoch: u32, stacks: impl IntoIterator<Item = (u32, Frames)>) {
        self.kept.extend(stacks.into_iter().map(|(id, frames)| ((epoch, id), frames)));
    }

    pub fn get(&self, epoch: u32, id: u32) -> Option<&Frames> {
        self.kept.get(&(epoch, id))
    }

    /// Drops what no blocked thread can still refer to. Call after the generation retired as
    /// `retired` has been resolved, with the references of the threads blocked now.
    pub fn prune(&mut self, retired: u32, blocked_now: HashSet<StackRef>) {
        let previous = std::mem::replace(&mut self.previous_refs, blocked_now);
        let now = &self.previous_refs;
        self.kept.retain(|r, _| r.0 == retired || now.contains(r) || previous.contains(r));
    }

    pub fn len(&self) -> usize {
        self.kept.len()
    }

    pub fn is_empty(&self) -> bool {
        self.kept.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(ip: u64) -> Frames {
        Arc::from(vec![ip])
    }

    #[test]
    fn keeps_the_retired_epoch_for_one_drain() {
        let mut t = StackTables::default();
        t.retire(1, [(7, frames(0x10)), (8, frames(0x20))]);
        t.prune(1, HashSet::new());
        assert_eq!(t.get(1, 7).map(|f| f[0]), Some(0x10), "a thread that woke right after the flip");
        t.retire(2, []);
        t.prune(2, HashSet::new());
        assert!(t.is_empty(), "nobody refers to epoch 1 any more");
    }

    #[test]
    fn keeps_what_blocked_threads_refer_to_across_drains() {
        let mut t = StackTables::default();
        t.retire(1, [(7, frames(0x10)), (8, frames(0x20))]);
        t.prune(1, HashSet::from([(1, 7)]));
        for epoch in 2..10 {
            t.retire(epoch, []);
            t.prune(epoch, HashSet::from([(1, 7)]));
        }
        assert_eq!(t.len(), 1);
        assert!(t.get(1, 7).is_some(), "still blocked: still needed");
        // The thread woke after the flip of drain 10: counted into the generation drained at 11.
        t.retire(10, []);
        t.prune(10, HashSet::new());
        assert!(t.get(1, 7).is_some(), "seen blocked at the previous drain");
        t.retire(11, []);
        t.prune(11, HashSet::new());
        assert!(t.is_empty());
    }

    #[test]
    fn same_id_in_different_epochs_stays_apart() {
        let mut t = StackTables::default();
        t.retire(1, [(5, frames(0x10))]);
        t.retire(2, [(5, frames(0x99))]);
        assert_eq!(t.get(1, 5).map(|f| f[0]), Some(0x10));
        assert_eq!(t.get(2, 5).map(|f| f[0]), Some(0x99));
    }
}
