//! Names for a JVM's compiled code, read from its memory (`code.rs`) when a stack holds an
//! address in its code cache that nothing named before (a perf map, when there is one, is asked
//! first: it names what the JVM wrote into it).

use std::{cell::RefCell, collections::HashSet, rc::Rc, sync::Arc};

use autodump_common::runtimes::{hotspot::hotspot_parts, kind};

use super::code::{Code, JavaCode};
use crate::{
    collect::maps::Mapping,
    symbolize::{Frame, Location, RuntimeNames},
};

/// Addresses remembered as named here before the set starts over.
const MAX_NAMED: usize = 1 << 20;

pub struct Naming {
    pub code: JavaCode,
    /// Addresses named here: the summary's share of samples with a frame so named.
    pub named: HashSet<u64>,
    /// Code freed or new since the names were last checked (`code_rows` finds it).
    pub changed: Vec<(u64, u64)>,
}

impl Naming {
    pub fn new(code: JavaCode) -> Self {
        Self { code, named: HashSet::new(), changed: Vec::new() }
    }

    /// Addresses named in code that changed since the last call, forgotten here: the symbolizer
    /// names them again when next seen.
    fn stale(&mut self) -> Vec<u64> {
        if self.changed.is_empty() {
            return Vec::new();
        }
        let inside = within(std::mem::take(&mut self.changed));
        let mut stale = Vec::new();
        self.named.retain(|&a| {
            let gone = inside(a);
            if gone {
                stale.push(a);
            }
            !gone
        });
        stale
    }

    /// `address` (or a frame entry) was named here.
    fn remember(&mut self, address: u64) {
        if self.named.len() >= MAX_NAMED {
            self.named.clear();
        }
        self.named.insert(address);
    }
}

/// Whether an address lies in any of `ranges` (`[start, end)`, in any order, overlapping or not).
fn within(mut ranges: Vec<(u64, u64)>) -> impl Fn(u64) -> bool {
    ranges.sort_unstable();
    // Merged, so that one range at most starts at or before an address and may hold it.
    let mut merged: Vec<(u64, u64)> = Vec::with_capacity(ranges.len());
    for (start, end) in ranges {
        match merged.last_mut() {
            Some(last) if start <= last.1 => last.1 = last.1.max(end),
            _ => merged.push((start, end)),
        }
    }
    move |a| {
        let i = merged.partition_point(|r| r.0 <= a);
        i > 0 && a < merged[i - 1].1
    }
}

/// The naming, shared with the instance's report.
pub struct HotSpotNames(pub Rc<RefCell<Naming>>);

impl RuntimeNames for HotSpotNames {
    fn kind(&self) -> Option<u8> {
        Some(kind::HOTSPOT)
    }

    /// An interpreted frame: its `Method*`, named as a compiled frame's method is.
    fn frame(&mut self, entry: u64) -> Option<Location> {
        let (method, bci) = hotspot_parts(entry);
        let mut naming = self.0.borrow_mut();
        let (frames, unnamed): (Arc<[Frame]>, _) = match naming.code.named(method) {
            Some((function, file)) => {
                let line = bci.and_then(|bci| naming.code.line(method, u32::try_from(bci).ok()?));
                (Arc::new([Frame { function, file, line }]), None)
            }
            None => {
                let function = format!("[java method {method:#x}]").into();
                let why = "the method was gone or unreadable when the stack was named".into();
                (Arc::new([Frame { function, file: None, line: None }]), Some(why))
            }
        };
        naming.remember(entry);
        Some(Location { address: entry, kernel: false, mapping: None, frames, unnamed })
    }

    fn names_anonymous(&self) -> bool {
        true
    }

    fn anonymous(&mut self, address: u64, mapping: Option<&Mapping>) -> Option<Location> {
        let mut naming = self.0.borrow_mut();
        let frames: Arc<[Frame]> = match naming.code.at(address)? {
            Code::Method(methods) => {
                methods.into_iter().map(|m| Frame { function: m.name, file: m.file, line: m.line }).collect()
            }
            Code::Blob(name) => Arc::new([Frame { function: name, file: None, line: None }]),
        };
        naming.remember(address);
        Some(Location { address, kernel: false, mapping: mapping.cloned(), frames, unnamed: None })
    }

    fn update(&mut self, _pid: u32, _when: crate::symbolize::Update) -> Vec<u64> {
        self.0.borrow_mut().stale()
    }

    fn clear(&mut self) {
        self.0.borrow_mut().named.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::within;

    #[test]
    fn an_address_is_within_ranges_given_in_any_order_and_overlapping() {
        let inside = within(vec![(0x300, 0x380), (0x100, 0x200), (0x180, 0x240), (0x240, 0x250)]);
        let got: Vec<u64> = [0xff, 0x100, 0x1ff, 0x23f, 0x24f, 0x250, 0x2ff, 0x300, 0x37f, 0x380]
            .into_iter()
            .filter(|&a| inside(a))
            .collect();
        assert_eq!(got, [0x100, 0x1ff, 0x23f, 0x24f, 0x300, 0x37f]);
        assert!(!within(Vec::new())(0x100));
    }
}
