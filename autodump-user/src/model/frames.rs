//! What a frame is to the model: code of the program a runtime named, or not.

use autodump_common::runtimes::{frame_kind, kind};

use crate::symbolize::Location;

/// A frame of the program's own code that a runtime named: an interpreted function (Python,
/// Ruby, Java's interpreter) or JIT code (Java's compiled methods, a perf map's). The verdict
/// names it rather than the interpreter's or the VM's native frames under it.
pub fn runtime_frame(location: &Location) -> bool {
    let jit = || location.mapping.as_ref().is_some_and(|m| m.is_anonymous());
    !location.kernel && location.address != 0 && (frame_kind(location.address) != kind::NATIVE || jit())
}
