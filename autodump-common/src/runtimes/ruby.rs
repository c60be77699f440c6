//! CRuby: how a process's execution context and control frames are laid out, so that a walk
//! through `rb_vm_exec` emits the Ruby frames that native frame runs (see the agent's
//! `runtimes::ruby`). Each thread's execution context is read from its thread-local
//! `ruby_current_ec`, through the thread pointer the kernel keeps for it. Offsets are bytes.

use super::{kind, pack_pointer, payload, runtime_frame, unpack_pointer, POINTER_BITS};

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RubyProc {
    /// `ruby_current_ec` is thread-local: its module's number in each thread's DTV, and its
    /// offset in that module's block. With `tls_module` 0, `tls_offset` is from the thread
    /// pointer itself (static TLS, as a TLS descriptor resolves it).
    pub tls_module: u64,
    pub tls_offset: i64,
    /// In `rb_execution_context_t`: `vm_stack`, `vm_stack_size` (in words), `cfp`.
    pub ec_vm_stack: u16,
    pub ec_vm_stack_size: u16,
    pub ec_cfp: u16,
    /// `sizeof(rb_control_frame_t)`, and its `pc`, `iseq` and `ep` fields.
    pub cfp_size: u16,
    pub cfp_pc: u16,
    pub cfp_iseq: u16,
    pub cfp_ep: u16,
    /// `rb_iseq_t::body`, and `iseq_encoded` in the body.
    pub iseq_body: u16,
    pub body_encoded: u16,
    pub _pad: [u16; 3],
}

/// `ep[0]`'s frame magic (`VM_FRAME_MAGIC_MASK`), and the magic of a C function's frame.
pub const FRAME_MAGIC_MASK: u64 = 0x7fff_0001;
pub const FRAME_MAGIC_CFUNC: u64 = 0x5555_0001;
/// The magic of the frame each execution context starts with (it may carry an iseq).
pub const FRAME_MAGIC_DUMMY: u64 = 0x7999_0001;
/// `VM_FRAME_FLAG_FINISH`: the frame a C call into the VM pushed; the frames of one
/// `rb_vm_exec` end with it.
pub const FRAME_FLAG_FINISH: u64 = 0x0020;
/// `ep[VM_ENV_DATA_INDEX_ME_CREF]`: a C function frame's method entry, one word below `ep[-1]`.
pub const EP_ME_CREF: u64 = 2 * 8;

/// A Ruby frame's payload: the iseq (or, for a C function, its method entry) and, above it,
/// whether it is a C function, then the instruction's position in the iseq's code (words, at
/// most [`RUBY_POS_MAX`]).
pub const RUBY_CFUNC: u64 = 1 << POINTER_BITS;
pub const RUBY_POS_SHIFT: u32 = POINTER_BITS + 1;
pub const RUBY_POS_MAX: u64 = (1 << (super::KIND_SHIFT - RUBY_POS_SHIFT)) - 1;

/// The stack entry of a Ruby frame running `iseq` at word `pos` of its code.
pub const fn ruby_iseq_frame(iseq: u64, pos: u64) -> u64 {
    let pos = if pos > RUBY_POS_MAX { RUBY_POS_MAX } else { pos };
    runtime_frame(kind::RUBY, pack_pointer(iseq) | (pos << RUBY_POS_SHIFT))
}

/// The stack entry of a C function's frame with method entry `me`.
pub const fn ruby_cfunc_frame(me: u64) -> u64 {
    runtime_frame(kind::RUBY, pack_pointer(me) | RUBY_CFUNC)
}

/// What a Ruby frame's entry names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RubyEntry {
    /// An iseq, at this word of its code.
    Iseq { iseq: u64, pos: u64 },
    /// A C function, by its method entry.
    Cfunc { me: u64 },
}

impl RubyEntry {
    /// Its stack entry.
    pub const fn entry(self) -> u64 {
        match self {
            RubyEntry::Iseq { iseq, pos } => ruby_iseq_frame(iseq, pos),
            RubyEntry::Cfunc { me } => ruby_cfunc_frame(me),
        }
    }

    /// What the stack entry of a Ruby frame names.
    pub const fn of(entry: u64) -> Self {
        let payload = payload(entry);
        if payload & RUBY_CFUNC != 0 {
            RubyEntry::Cfunc { me: unpack_pointer(payload) }
        } else {
            RubyEntry::Iseq { iseq: unpack_pointer(payload), pos: payload >> RUBY_POS_SHIFT }
        }
    }
}
