//! A CRuby interpreter in a live process, read from outside without stopping it: its threads
//! (`vm->ractor.main_thread`, then the ring of its ractor's threads), each thread's control
//! frames, and what a frame names (an iseq's label, path and line; a C function's name, from the
//! global symbol table).
//!
//! The process runs while it is read: every list is capped, every object is checked (a string's
//! type in its flags, a thread's VM pointer), and what cannot be read is counted, never trusted.

use std::{collections::HashMap, sync::Arc};

use autodump_common::runtimes::ruby::{RubyEntry, EP_ME_CREF, FRAME_MAGIC_CFUNC, FRAME_MAGIC_DUMMY, FRAME_MAGIC_MASK};

use super::{
    lines::{line_of, succ_table_len},
    offsets::{Layout, StringLayout, Tid},
};
use crate::collect::remote::{ReadError, RemoteMemory};

/// Threads read at most (a guard against a ring that does not close).
pub const MAX_THREADS: usize = 4096;
/// Ruby frames kept per thread in a dump; deeper stacks keep their innermost frames.
pub const MAX_FRAMES: usize = 256;
/// Longest string read.
const MAX_STRING: u64 = 4096;
/// Largest iseq (in words) whose line table is read, and most line entries read.
const MAX_ISEQ_WORDS: u64 = 1 << 20;
const MAX_LINE_ENTRIES: u64 = 1 << 16;
/// Iseqs and method entries remembered per process before the cache starts over.
const MAX_NAMED: usize = 100_000;

/// `RUBY_T_MASK`, and the types of a string and an array.
const T_MASK: u64 = 0x1f;
const T_STRING: u64 = 0x05;
const T_ARRAY: u64 = 0x07;
/// `RSTRING_NOEMBED` and `RARRAY_EMBED_FLAG` (`FL_USER1`).
const FL_USER1: u64 = 1 << 13;
/// 3.1: an embedded string's length in flag bits 14-18.
const EMBED_LEN_SHIFT: u64 = 14;
const EMBED_LEN_MASK: u64 = 0x1f;
/// IDs above this are named (serial << 4 | scope); below, operators (a character, or a token).
const LAST_OPERATOR_ID: u64 = 0xff;
/// `ID_ENTRY_UNIT`, `ID_ENTRY_SIZE`: the symbol table's arrays hold 512 (string, symbol) pairs.
const ID_ENTRY_UNIT: u64 = 512;

#[derive(Debug, thiserror::Error)]
pub enum RubyError {
    #[error("cannot read target memory at {0:#x}")]
    Read(u64),
    #[error("{0}")]
    Inconsistent(String),
}

impl From<ReadError> for RubyError {
    fn from(e: ReadError) -> Self {
        RubyError::Read(e.0)
    }
}

/// A frame as a reader names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RubyFrame {
    /// The iseq's label (`block in work`), or a C function's name and `[c function]`.
    pub label: Arc<str>,
    /// The source file; None for a C function.
    pub path: Option<Arc<str>>,
    /// 0 when the line table gives none.
    pub line: u32,
}

/// One Ruby thread as the dump lists it.
#[derive(Clone, Debug)]
pub struct RubyThread {
    pub tid: u32,
    /// Innermost first.
    pub frames: Vec<RubyFrame>,
    pub truncated: bool,
    /// Frames that could not be read (garbage, or a frame being pushed).
    pub unreadable: u32,
}

/// What one iseq says, kept while the process runs.
struct Iseq {
    label: Arc<str>,
    path: Arc<str>,
    first_line: u32,
    /// Its line entries, their count and its bit vector.
    entries: Vec<u8>,
    count: u64,
    table: Option<Vec<u8>>,
}

/// Names read so far in one process, by iseq and by method entry.
#[derive(Default)]
pub struct NameCache {
    iseqs: HashMap<u64, Option<Arc<Iseq>>>,
    methods: HashMap<u64, Option<Arc<str>>>,
}

pub struct RubyRuntime {
    pub(super) memory: Box<dyn RemoteMemory>,
    pub layout: Layout,
    /// The global that holds the VM pointer, and `ruby_global_symbols`, in this process.
    pub(super) vm_ptr: u64,
    pub(super) global_symbols: Option<u64>,
}

impl RubyRuntime {
    /// The VM now, checked: its main thread points back at it.
    pub fn vm(&self) -> Result<u64, RubyError> {
        let m = &*self.memory;
        let vm = m.u64(self.vm_ptr)?;
        let main = m.u64(vm.wrapping_add(self.layout.vm_main_thread))?;
        if vm == 0 || m.u64(main.wrapping_add(self.layout.thread_vm))? != vm {
            return Err(RubyError::Inconsistent(format!(
                "no VM at {:#x} (its main thread does not lead back)",
                self.vm_ptr
            )));
        }
        Ok(vm)
    }

    /// Every thread (`rb_thread_t`) of the main ractor: the main thread, then the ring its list
    /// node is in, each checked to belong to this VM (the ring's head, in the ractor, does not).
    pub fn thread_list(&self) -> Result<Vec<u64>, RubyError> {
        let (m, l) = (&*self.memory, &self.layout);
        let vm = self.vm()?;
        let main = m.field(vm, l.vm_main_thread)?;
        let mut threads = vec![main];
        let mut node = m.u64(main)?;
        // The ring holds the threads and its head; a ring that does not close ends here too.
        for _ in 0..=MAX_THREADS {
            if node == main || threads.len() == MAX_THREADS {
                break;
            }
            if m.u64(node.wrapping_add(l.thread_vm)).is_ok_and(|v| v == vm) {
                threads.push(node);
            }
            node = m.u64(node)?;
        }
        Ok(threads)
    }

    /// A thread's native id and execution context.
    pub fn thread(&self, thread: u64) -> Result<(u32, u64), RubyError> {
        let (m, l) = (&*self.memory, &self.layout);
        let tid = match l.thread_tid {
            Tid::InThread(at) => m.field(thread, at)? as u32,
            Tid::InNativeThread { nt, tid } => m.u64(m.field(thread, nt)?.wrapping_add(tid))? as u32,
        };
        Ok((tid, m.field(thread, l.thread_ec)?))
    }

    /// An execution context's control frames, innermost first, as (iseq, pc, ep-flags, ep):
    /// from its `cfp` up to the end of its VM stack, where the frames of a consistent read end
    /// exactly.
    pub fn control_frames(&self, ec: u64) -> Result<Vec<(u64, u64, u64, u64)>, RubyError> {
        let (m, l) = (&*self.memory, &self.layout);
        let stack = m.field(ec, l.ec_vm_stack)?;
        let size = m.field(ec, l.ec_vm_stack_size)?;
        let cfp = m.field(ec, l.ec_cfp)?;
        let end = stack.wrapping_add(size.wrapping_mul(8));
        if size == 0 || size > 1 << 24 || cfp < stack || cfp >= end || (end - cfp) % l.cfp_size != 0 {
            return Err(RubyError::Inconsistent(format!("control frames at {cfp:#x} do not end with the VM stack")));
        }
        let count = ((end - cfp) / l.cfp_size).min(1 << 16);
        let mut frames = Vec::with_capacity(count as usize);
        for i in 0..count {
            let at = cfp + i * l.cfp_size;
            let ep = m.field(at, l.cfp_ep)?;
            let flags = m.u64(ep).unwrap_or(0);
            frames.push((m.field(at, l.cfp_iseq)?, m.field(at, l.cfp_pc)?, flags, ep));
        }
        Ok(frames)
    }

    /// A Ruby object's type and flags.
    fn flags(&self, object: u64) -> Result<u64, RubyError> {
        Ok(self.memory.u64(object)?)
    }

    /// The bytes of a String object, cut at `MAX_STRING`.
    pub fn string(&self, object: u64) -> Result<String, RubyError> {
        let m = &*self.memory;
        let flags = self.flags(object)?;
        if flags & T_MASK != T_STRING {
            return Err(RubyError::Inconsistent(format!("{object:#x} is no String")));
        }
        let (len, at) = match (self.layout.string, flags & FL_USER1 != 0) {
            (StringLayout::LengthInFlags, false) => {
                ((flags >> EMBED_LEN_SHIFT) & EMBED_LEN_MASK, object.wrapping_add(16))
            }
            (StringLayout::LengthInFlags, true) => (m.field(object, 16)?, m.field(object, 24)?),
            (StringLayout::LengthField, false) => (m.field(object, 16)?, object.wrapping_add(24)),
            (StringLayout::LengthField, true) => (m.field(object, 16)?, m.field(object, 24)?),
        };
        let mut bytes = vec![0u8; len.min(MAX_STRING) as usize];
        m.read(at, &mut bytes)?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    /// Element `index` of an Array object.
    fn array_entry(&self, object: u64, index: u64) -> Result<u64, RubyError> {
        let m = &*self.memory;
        let flags = self.flags(object)?;
        if flags & T_MASK != T_ARRAY {
            return Err(RubyError::Inconsistent(format!("{object:#x} is no Array")));
        }
        let embedded = flags & FL_USER1 != 0;
        let base = if embedded { object.wrapping_add(16) } else { m.field(object, 32)? };
        Ok(m.u64(base.wrapping_add(index * 8))?)
    }

    /// An iseq's label, path and line table, read once per process.
    fn iseq(&self, iseq: u64, cache: &mut NameCache) -> Option<Arc<Iseq>> {
        if let Some(known) = cache.iseqs.get(&iseq) {
            return known.clone();
        }
        if cache.iseqs.len() >= MAX_NAMED {
            cache.iseqs.clear();
        }
        let read = self.read_iseq(iseq).map(Arc::new).ok();
        cache.iseqs.insert(iseq, read.clone());
        read
    }

    fn read_iseq(&self, iseq: u64) -> Result<Iseq, RubyError> {
        let (m, l) = (&*self.memory, &self.layout);
        let body = m.field(iseq, l.iseq_body)?;
        let label: Arc<str> = self.string(m.field(body, l.body_label)?)?.into();
        let pathobj = m.field(body, l.body_pathobj)?;
        let path = match self.flags(pathobj)? & T_MASK {
            T_ARRAY => self.string(self.array_entry(pathobj, 0)?)?,
            _ => self.string(pathobj)?,
        };
        let first = m.field(body, l.body_first_lineno)?;
        let first_line = if l.first_lineno_is_value { (first as i64 >> 1) as u32 } else { first as u32 };
        let count = m.field(body, l.body_insns_size)? & 0xffff_ffff;
        let iseq_size = m.u64(body)? >> 32;
        let (mut entries, mut table) = (Vec::new(), None);
        if count > 0 && count <= MAX_LINE_ENTRIES && iseq_size <= MAX_ISEQ_WORDS {
            entries = vec![0u8; (count * l.insn_info_entry_size) as usize];
            m.read(m.field(body, l.body_insns_info)?, &mut entries)?;
            if count > 1 {
                let mut bits = vec![0u8; succ_table_len(iseq_size) as usize];
                m.read(m.field(body, l.body_succ_index_table)?, &mut bits)?;
                table = Some(bits);
            }
        }
        Ok(Iseq { label, path: path.into(), first_line, entries, count, table })
    }

    /// The frame of `iseq` at word `pos` of its code.
    pub fn iseq_frame(&self, iseq: u64, pos: u64, cache: &mut NameCache) -> Option<RubyFrame> {
        let i = self.iseq(iseq, cache)?;
        let line = line_of(&i.entries, self.layout.insn_info_entry_size, i.count, i.table.as_deref(), pos);
        Some(RubyFrame { label: i.label.clone(), path: Some(i.path.clone()), line: line.unwrap_or(i.first_line) })
    }

    /// The frame of a C function, by its method entry: `name [c function]`.
    pub fn cfunc_frame(&self, me: u64, cache: &mut NameCache) -> Option<RubyFrame> {
        if cache.methods.len() >= MAX_NAMED {
            cache.methods.clear();
        }
        let name = cache
            .methods
            .entry(me)
            .or_insert_with(|| {
                let id = self.memory.field(me, self.layout.me_called_id).ok()?;
                Some(format!("{} [c function]", self.id_name(id)?).into())
            })
            .clone()?;
        Some(RubyFrame { label: name, path: None, line: 0 })
    }

    /// The name of method id `id`: an operator's character, or the global symbol table's string.
    fn id_name(&self, id: u64) -> Option<String> {
        if id <= LAST_OPERATOR_ID {
            let c = char::from_u32(id as u32).filter(char::is_ascii_punctuation);
            return Some(c.map_or_else(|| format!("[operator {id}]"), String::from));
        }
        let m = &*self.memory;
        let symbols = self.global_symbols?;
        let serial = id >> 4;
        let last = m.u64(symbols).ok()? & 0xffff_ffff;
        if serial == 0 || serial > last {
            return None;
        }
        let ids = m.field(symbols, 16).ok()?;
        let entries = self.array_entry(ids, serial / ID_ENTRY_UNIT).ok()?;
        let string = self.array_entry(entries, (serial % ID_ENTRY_UNIT) * 2).ok()?;
        self.string(string).ok()
    }

    /// What a control frame (iseq, pc, flags, ep) runs, as the probe puts it in a stack; None for
    /// a frame without code (the VM's own).
    pub fn entry(&self, (iseq, pc, flags, ep): (u64, u64, u64, u64)) -> Option<RubyEntry> {
        let (m, l) = (&*self.memory, &self.layout);
        match flags & FRAME_MAGIC_MASK {
            FRAME_MAGIC_CFUNC => return Some(RubyEntry::Cfunc { me: m.u64(ep.wrapping_sub(EP_ME_CREF)).ok()? }),
            FRAME_MAGIC_DUMMY => return None,
            _ if iseq == 0 || pc == 0 => return None,
            _ => {}
        }
        let encoded = m.field(m.field(iseq, l.iseq_body).ok()?, l.body_encoded).ok()?;
        Some(RubyEntry::Iseq { iseq, pos: pc.wrapping_sub(encoded) / 8 })
    }

    /// The frame a stack entry names.
    pub fn frame(&self, entry: RubyEntry, cache: &mut NameCache) -> Option<RubyFrame> {
        match entry {
            RubyEntry::Iseq { iseq, pos } => self.iseq_frame(iseq, pos, cache),
            RubyEntry::Cfunc { me } => self.cfunc_frame(me, cache),
        }
    }

    /// Every thread's Ruby frames, innermost first, named.
    pub fn threads(&self, cache: &mut NameCache) -> Result<Vec<RubyThread>, RubyError> {
        let mut threads = Vec::new();
        for thread in self.thread_list()? {
            let Ok((tid, ec)) = self.thread(thread) else { continue };
            let mut t = RubyThread { tid, frames: Vec::new(), truncated: false, unreadable: 0 };
            for control in self.control_frames(ec).unwrap_or_default() {
                let Some(entry) = self.entry(control) else { continue };
                let frame = self.frame(entry, cache);
                match frame {
                    Some(_) if t.frames.len() == MAX_FRAMES => t.truncated = true,
                    Some(f) => t.frames.push(f),
                    None => t.unreadable += 1,
                }
            }
            threads.push(t);
        }
        Ok(threads)
    }
}

impl RubyRuntime {
    /// A reader of CRuby 3.`minor` over a byte image of memory at `base`, with the VM pointer at
    /// `base` and the symbol table at `base + 8` (for the fuzz target: the image is garbage).
    pub fn over_image(base: u64, bytes: Vec<u8>, minor: u32) -> Option<Self> {
        let memory: Box<dyn RemoteMemory> = Box::new(crate::collect::remote::ImageMemory { base, bytes });
        let layout = super::offsets::of(minor)?;
        Some(Self { memory, layout, vm_ptr: base, global_symbols: Some(base + 8) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fuzz target's seed: a consistent image of a 3.3 VM with one thread, running a method
    /// that called a C function.
    #[test]
    fn an_image_of_one_thread_reads_as_its_frames() {
        let seed = include_bytes!("../../../../fuzz/seeds/ruby_memory/one_thread_3_3");
        let rt = RubyRuntime::over_image(0x10_0000, seed[1..].to_vec(), 3).unwrap();
        let threads = rt.threads(&mut NameCache::default()).unwrap();
        assert_eq!(threads.len(), 1);
        let t = &threads[0];
        let frames: Vec<String> =
            t.frames.iter().map(|f| format!("{} {:?}:{}", f.label, f.path.as_deref(), f.line)).collect();
        assert_eq!(
            (t.tid, frames),
            (1234, vec!["main [c function] None:0".to_string(), "main Some(\"x.rb\"):2".into()])
        );
        assert_eq!(t.unreadable, 0);
    }

    /// Addresses near the top of the address space (garbage in a control frame, an object or a
    /// body) wrap into unreadable ones, never overflow (the fuzz target found `iseq + offset`).
    #[test]
    fn addresses_at_the_top_are_unreadable_not_an_overflow() {
        let rt = RubyRuntime::over_image(0x10_0000, vec![0; 64], 3).unwrap();
        let top = u64::MAX - 4;
        assert!(rt.entry((top, 1, 0, top)).is_none());
        assert!(rt.entry((top, 1, FRAME_MAGIC_CFUNC, top)).is_none());
        assert!(rt.control_frames(top).is_err());
        assert!(rt.thread(top).is_err());
        assert!(rt.string(top).is_err());
        assert!(rt.iseq_frame(top, 0, &mut NameCache::default()).is_none());
        assert!(rt.cfunc_frame(top, &mut NameCache::default()).is_none());
    }
}
