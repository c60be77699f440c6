//! HotSpot: where an interpreted Java frame keeps its `Method*` and bytecode pointer, so that a
//! walk through the template interpreter emits the Java method each interpreter frame runs (see
//! the agent's `runtimes::hotspot`). Compiled frames need no step: the agent gives the walk rows
//! for the code cache, each compiled method's frame size. Offsets are bytes.

use super::{kind, pack_pointer, payload, runtime_frame, unpack_pointer, POINTER_BITS};

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HotSpotProc {
    /// From an interpreter frame's frame pointer: its `Method*`, and its bytecode pointer.
    pub frame_method: i64,
    pub frame_bcp: i64,
    /// `Method::_constMethod`, and `sizeof(ConstMethod)`: a method's bytecodes follow its
    /// `ConstMethod`.
    pub method_const: u64,
    pub const_method_size: u64,
}

/// An interpreted frame's payload: its `Method*`, and above it the bytecode index, at most
/// [`BCI_UNKNOWN`] (which also says the bytecode pointer could not be read).
pub const BCI_SHIFT: u32 = POINTER_BITS;
pub const BCI_UNKNOWN: u64 = (1 << (super::KIND_SHIFT - BCI_SHIFT)) - 1;

/// The stack entry of an interpreted frame running `method` at bytecode `bci`.
pub const fn hotspot_frame(method: u64, bci: u64) -> u64 {
    let bci = if bci > BCI_UNKNOWN { BCI_UNKNOWN } else { bci };
    runtime_frame(kind::HOTSPOT, pack_pointer(method) | bci << BCI_SHIFT)
}

/// The `Method*` and bytecode index of an interpreted frame's entry (None for the index when
/// it is unknown).
pub const fn hotspot_parts(entry: u64) -> (u64, Option<u64>) {
    let payload = payload(entry);
    let bci = payload >> BCI_SHIFT;
    (unpack_pointer(payload), if bci == BCI_UNKNOWN { None } else { Some(bci) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_keeps_its_method_and_bytecode_index() {
        let method = 0x7f12_3456_7890;
        assert_eq!(hotspot_parts(hotspot_frame(method, 17)), (method, Some(17)));
        assert_eq!(hotspot_parts(hotspot_frame(method, 1 << 20)), (method, None));
        assert_eq!(super::super::frame_kind(hotspot_frame(method, 0)), kind::HOTSPOT);
    }
}
