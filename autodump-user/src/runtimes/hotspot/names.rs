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
}

impl Naming {
    /// `address` (or a frame entry) was named here.
    fn remember(&mut self, address: u64) {
        if self.named.len() >= MAX_NAMED {
            self.named.clear();
        }
        self.named.insert(address);
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
                methods.into_iter().map(|(function, file)| Frame { function, file, line: None }).collect()
            }
            Code::Blob(name) => Arc::new([Frame { function: name, file: None, line: None }]),
        };
        naming.remember(address);
        Some(Location { address, kernel: false, mapping: mapping.cloned(), frames, unnamed: None })
    }

    fn clear(&mut self) {
        self.0.borrow_mut().named.clear();
    }
}
