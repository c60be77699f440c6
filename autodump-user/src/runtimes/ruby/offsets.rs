//! CRuby's layouts, by version: where the fields the reader and the probe read sit, from Ruby's
//! own headers (`vm_core.h`, `iseq.h`, `method.h`, `thread_pthread.h`, `include/ruby/internal/
//! core/rstring.h` and `rarray.h` of 3.1.2, 3.3.8 and 3.4.5). None is taken on faith: the reader
//! checks them against the live process when it attaches (a thread's frames must end exactly
//! where its VM stack does, the threads' list must lead back to the VM), and says so when they
//! do not hold.

/// Offsets in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    /// `rb_vm_t`: `ractor.main_thread`.
    pub vm_main_thread: u64,
    /// `rb_thread_t`: its list node (first), `vm`, `ec`; the native thread id either in the
    /// thread itself or in its `rb_native_thread` (3.3+).
    pub thread_vm: u64,
    pub thread_ec: u64,
    pub thread_tid: Tid,
    /// `rb_execution_context_t`: `vm_stack`, `vm_stack_size` (words), `cfp`.
    pub ec_vm_stack: u64,
    pub ec_vm_stack_size: u64,
    pub ec_cfp: u64,
    /// `rb_control_frame_t`: its size, `pc`, `iseq`, `ep`.
    pub cfp_size: u64,
    pub cfp_pc: u64,
    pub cfp_iseq: u64,
    pub cfp_ep: u64,
    /// `rb_iseq_t::body`; in the body: `iseq_encoded`, `location.{pathobj, label}`,
    /// `location.first_lineno` (a Fixnum before 3.2, an int since), `insns_info.{body, size,
    /// succ_index_table}`.
    pub iseq_body: u64,
    pub body_encoded: u64,
    pub body_pathobj: u64,
    pub body_label: u64,
    pub body_first_lineno: u64,
    pub first_lineno_is_value: bool,
    pub body_insns_info: u64,
    pub body_insns_size: u64,
    pub body_succ_index_table: u64,
    /// `sizeof(struct iseq_insn_info_entry)`: `line_no` is its first field.
    pub insn_info_entry_size: u64,
    /// `rb_method_entry_t::called_id`.
    pub me_called_id: u64,
    /// Strings: embedded length in the flags (before 3.2), or a `len` field (3.2+).
    pub string: StringLayout,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tid {
    /// `rb_thread_t::tid`.
    InThread(u64),
    /// `rb_thread_t::nt`, then `rb_native_thread::tid`.
    InNativeThread { nt: u64, tid: u64 },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StringLayout {
    /// 3.1: an embedded string's length in flag bits 14-18, its bytes at 16; a heap string's
    /// length at 16 and pointer at 24.
    LengthInFlags,
    /// 3.2+: the length at 16 always; an embedded string's bytes at 24, a heap string's pointer
    /// at 24.
    LengthField,
}

/// Ruby 3.1 (Debian 12).
pub const V3_1: Layout = Layout {
    vm_main_thread: 40,
    thread_vm: 32,
    thread_ec: 40,
    thread_tid: Tid::InThread(88),
    ec_vm_stack: 0,
    ec_vm_stack_size: 8,
    ec_cfp: 16,
    // pc, sp, iseq, self, ep, block_code, __bp__, jit_return.
    cfp_size: 64,
    cfp_pc: 0,
    cfp_iseq: 16,
    cfp_ep: 32,
    iseq_body: 16,
    body_encoded: 8,
    // `param` takes 16..64; `location` is 56 bytes (`first_lineno` a VALUE).
    body_pathobj: 64,
    body_label: 80,
    body_first_lineno: 88,
    first_lineno_is_value: true,
    body_insns_info: 120,
    body_insns_size: 136,
    body_succ_index_table: 144,
    insn_info_entry_size: 12,
    me_called_id: 24,
    string: StringLayout::LengthInFlags,
};

/// Ruby 3.3 (Debian 13) and 3.4: the threads moved their native id into `rb_native_thread`, the
/// control frame lost `__bp__`, and `first_lineno` became an int.
pub const V3_3: Layout = Layout {
    thread_ec: 48,
    thread_tid: Tid::InNativeThread { nt: 40, tid: 24 },
    cfp_size: 56,
    first_lineno_is_value: false,
    // `location` is 48 bytes now.
    body_insns_info: 112,
    body_insns_size: 128,
    body_succ_index_table: 136,
    string: StringLayout::LengthField,
    ..V3_1
};

/// The layout of Ruby 3.`minor`, when it is one this reader knows.
pub fn of(minor: u32) -> Option<Layout> {
    match minor {
        1 => Some(V3_1),
        3 | 4 => Some(V3_3),
        _ => None,
    }
}
