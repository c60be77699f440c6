//! Names for a JVM's compiled code, read from its memory (`code.rs`) when a stack holds an
//! address in its code cache that nothing named before (a perf map, when there is one, is asked
//! first: it names what the JVM wrote into it).

use std::{cell::RefCell, collections::HashSet, rc::Rc, sync::Arc};

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

/// The naming, shared with the instance's report.
pub struct HotSpotNames(pub Rc<RefCell<Naming>>);

impl RuntimeNames for HotSpotNames {
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
        if naming.named.len() >= MAX_NAMED {
            naming.named.clear();
        }
        naming.named.insert(address);
        Some(Location { address, kernel: false, mapping: mapping.cloned(), frames, unnamed: None })
    }

    fn clear(&mut self) {
        self.0.borrow_mut().named.clear();
    }
}
