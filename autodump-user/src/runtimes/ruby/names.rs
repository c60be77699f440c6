//! Names of the Ruby frames the probes put in user stacks (an iseq and a position in its code,
//! or a C function's method entry), read from the live process: `label (path:line)`, or
//! `name [c function]`. The interpreter loop's own native frame, which the Ruby frames it runs
//! stand in for, is left out of stacks that have them.
//!
//! A walk taken while C code has pushed a block's frame but the interpreter loop has not started
//! it yet has one more group of Ruby frames than loop frames: the probes emit each group one loop
//! frame out, and the outermost after the stack's root, behind a mark. Such a stack is put back
//! here: each group one loop frame in, the innermost at the top, as Ruby sees its frames.

use std::sync::Arc;

use autodump_common::runtimes::{frame_kind, kind, ruby::RubyEntry, trailing_mark};

use super::{NameCache, RubyProcess};
use crate::symbolize::{Frame, Location, RuntimeNames};

pub struct RubyNames {
    ruby: Arc<RubyProcess>,
    cache: NameCache,
}

impl RubyNames {
    pub fn new(ruby: Arc<RubyProcess>) -> Self {
        Self { ruby, cache: NameCache::default() }
    }
}

impl RuntimeNames for RubyNames {
    fn kind(&self) -> Option<u8> {
        Some(kind::RUBY)
    }

    fn frame(&mut self, entry: u64) -> Option<Location> {
        if entry == trailing_mark(kind::RUBY) {
            let frames = [Frame { function: "[ruby frames moved]".into(), file: None, line: None }].into();
            return Some(Location { address: entry, kernel: false, mapping: None, frames, unnamed: None });
        }
        let (frames, unnamed): (Arc<[Frame]>, Option<Arc<str>>) =
            match self.ruby.rt.frame(RubyEntry::of(entry), &mut self.cache) {
                Some(f) => {
                    let line = (f.line > 0).then_some(f.line);
                    ([Frame { function: f.label, file: f.path, line }].into(), None)
                }
                None => {
                    let name: Arc<str> = format!("[ruby frame {entry:#x}]").into();
                    let why = "the iseq or method entry was gone or unreadable when the stack was named".into();
                    ([Frame { function: name, file: None, line: None }].into(), Some(why))
                }
            };
        Some(Location { address: entry, kernel: false, mapping: None, frames, unnamed })
    }

    fn tidy(&self, stack: Vec<Arc<Location>>) -> Vec<Arc<Location>> {
        let ruby = |l: &Location| !l.kernel && frame_kind(l.address) == kind::RUBY;
        if !stack.iter().any(|l| ruby(l)) {
            return stack;
        }
        let (start, end) = self.ruby.interpreter;
        regrouped(stack, ruby).into_iter().filter(|l| l.kernel || !(start..end).contains(&l.address)).collect()
    }
}

/// `stack` (innermost first) with its Ruby frames put back where they belong when the walk left
/// some past its root (after the mark): every group of consecutive Ruby frames moves to the place
/// of the next group in (the innermost to the top), and the left-over group takes the place of
/// the outermost. Without the mark, `stack` as it is.
fn regrouped(stack: Vec<Arc<Location>>, ruby: impl Fn(&Location) -> bool) -> Vec<Arc<Location>> {
    let mark = trailing_mark(kind::RUBY);
    let Some(at) = stack.iter().position(|l| !l.kernel && l.address == mark) else { return stack };
    let mut stack = stack;
    let left_over: Vec<Arc<Location>> = stack.split_off(at).into_iter().skip(1).collect();
    if left_over.is_empty() {
        // The walk hit its depth limit right after the mark.
        return stack;
    }
    // The native frames, and before each a group (maybe empty) of Ruby frames.
    let mut groups: Vec<Vec<Arc<Location>>> = vec![Vec::new()];
    let mut natives = Vec::new();
    for l in stack {
        if ruby(&l) {
            groups.last_mut().expect("one group").push(l);
        } else {
            natives.push(l);
            groups.push(Vec::new());
        }
    }
    // Groups are the non-empty runs; the last slot (after the root) is empty.
    let runs: Vec<usize> = (0..groups.len()).filter(|&i| !groups[i].is_empty()).collect();
    let mut moved: Vec<Vec<Arc<Location>>> = vec![Vec::new(); groups.len()];
    let mut incoming = left_over;
    for &i in runs.iter().rev() {
        moved[i] = std::mem::replace(&mut incoming, std::mem::take(&mut groups[i]));
    }
    // `incoming` now holds the innermost group: it goes to the top.
    let mut out = incoming;
    for (i, native) in natives.into_iter().enumerate() {
        out.append(&mut moved[i]);
        out.push(native);
    }
    out.extend(moved.pop().unwrap_or_default());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use autodump_common::runtimes::runtime_frame;

    fn at(address: u64) -> Arc<Location> {
        let frames = [Frame { function: format!("{address:#x}").into(), file: None, line: None }].into();
        Arc::new(Location { address, kernel: false, mapping: None, frames, unnamed: None })
    }

    fn rb(n: u64) -> u64 {
        runtime_frame(kind::RUBY, n)
    }

    fn is_ruby(l: &Location) -> bool {
        frame_kind(l.address) == kind::RUBY
    }

    #[test]
    fn groups_move_one_loop_frame_in_when_some_were_left_past_the_root() {
        // Innermost first: natives 1 and 2 (the C code that pushed block frame 10, not yet run),
        // then each group before the loop frame out of its own: 10 before loop frame 3, 11 before
        // loop frame 5; root 6; left over, 12 and 13 (the outermost, loop frame 5's).
        let walked = [1, 2, rb(10), 3, 4, rb(11), 5, 6, trailing_mark(kind::RUBY), rb(12), rb(13)];
        let stack: Vec<Arc<Location>> = walked.iter().map(|&a| at(a)).collect();
        let put_back: Vec<u64> = regrouped(stack, is_ruby).iter().map(|l| l.address).collect();
        assert_eq!(put_back, [rb(10), 1, 2, rb(11), 3, 4, rb(12), rb(13), 5, 6]);
    }

    #[test]
    fn a_stack_without_the_mark_is_left_as_it_is() {
        let walked = [1, rb(10), 3, 4, rb(11), 5, 6];
        let stack: Vec<Arc<Location>> = walked.iter().map(|&a| at(a)).collect();
        let same: Vec<u64> = regrouped(stack, is_ruby).iter().map(|l| l.address).collect();
        assert_eq!(same, walked);
    }
}
