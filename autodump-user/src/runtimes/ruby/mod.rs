//! CRuby programs from outside: Ruby frames in the probes' stacks (`method (file:line)` with the
//! C frames around them), every Ruby thread's stack for a bundle's thread dump, and the thread
//! count the `ruby_threads` rule watches; read from the live process's memory without stopping
//! it, as rbspy does.
//!
//! The interpreter is found by its files (`libruby-3.X.so`, or a `ruby` executable linked
//! statically), its version by `ruby_version`, its layout by version (`offsets.rs`); where it
//! keeps its VM, its threads' execution contexts and its symbol table, by its symbols or, in a
//! build that hides them, by what its exported functions read (`file.rs`). Supported: 3.1, 3.3
//! and 3.4 on x86_64. How the agent uses it is in `instance.rs`.

pub mod file;
mod instance;
pub mod lines;
mod names;
mod offsets;
pub mod reader;
mod thread_dump;

use std::sync::Arc;

use autodump_common::runtimes::{
    kind,
    ruby::{RubyProc, FRAME_MAGIC_CFUNC, FRAME_MAGIC_MASK},
    RuntimeProc,
};

use crate::{
    collect::{
        maps::MemoryMap,
        remote::{ProcessMemory, RemoteMemory},
    },
    files::identity::open_path,
};
use file::{Interpreter, RubyFile, RubyFiles};
pub use instance::RUNTIME;
pub use reader::{NameCache, RubyFrame, RubyRuntime, RubyThread, MAX_FRAMES, MAX_THREADS};

/// Reads of a process's memory at attach before its interpreter's state is taken as unreadable:
/// the process runs while it is read, and a frame being pushed reads inconsistently.
const ATTACH_TRIES: u32 = 5;

/// Whether Ruby can be read in a process.
pub enum RubySupport {
    NotRuby,
    /// A CRuby this reader does not support, or cannot read, and why (said in summaries).
    Unsupported {
        version: String,
        why: String,
    },
    Ready(Arc<RubyProcess>),
}

/// A CRuby interpreter in a live process, with what its probe step needs.
pub struct RubyProcess {
    pub rt: RubyRuntime,
    /// "3.4.11".
    pub version: String,
    /// The file the interpreter lives in.
    pub file: String,
    /// The interpreter loop (`vm_exec_core`) in the process: [start, end).
    pub interpreter: (u64, u64),
    /// `ruby_current_ec`: the module's number in each thread's DTV, and its offset in its block.
    pub tls: (u64, u64),
    /// YJIT is on: code it compiled has no Ruby frames of its own in stacks.
    pub yjit: bool,
}

impl RubySupport {
    /// Looks for CRuby in `pid`'s executable mappings; `files` keeps what each file says.
    pub fn detect(pid: u32, maps: &MemoryMap, files: &mut RubyFiles) -> RubySupport {
        let candidates = maps.mappings().filter(|m| {
            let name = m.module();
            m.is_file() && (name.starts_with("libruby") || name.starts_with("ruby"))
        });
        for m in candidates {
            let path = open_path(pid, m.start, m.end, &m.path);
            let Some(file) = files.get(&path, RubyFile::parse) else { continue };
            let RubyFile::Interpreter(ruby) = &*file else { continue };
            let version = ruby.version.clone();
            let bias = ruby
                .segments
                .delta_for_mapping(m.file_offset)
                .map(|d| m.start.wrapping_sub(m.file_offset.wrapping_add(d)));
            let memory = Box::new(ProcessMemory::new(pid));
            return match RubyProcess::open(pid, memory, ruby, bias.unwrap_or(0), &m.path) {
                Ok(process) => RubySupport::Ready(Arc::new(process)),
                Err(why) => RubySupport::Unsupported { version, why },
            };
        }
        RubySupport::NotRuby
    }
}

impl RubyProcess {
    /// Checks what the file says against the process's memory; `bias` is added to the file's
    /// addresses.
    fn open(
        pid: u32,
        memory: Box<dyn RemoteMemory>,
        file: &Interpreter,
        bias: u64,
        path: &str,
    ) -> Result<Self, String> {
        let layout = file.layout.clone()?;
        let mut rt = RubyRuntime { memory, layout, vm_ptr: 0, global_symbols: None };
        // A candidate is the global itself (hidden visibility), or its GOT slot (an exported one).
        let mut found = false;
        for at in file.vm_ptr.iter().map(|a| a.wrapping_add(bias)) {
            for global in [Some(at), rt.memory.u64(at).ok()].into_iter().flatten() {
                rt.vm_ptr = global;
                if (0..ATTACH_TRIES).any(|_| rt.vm().is_ok()) {
                    found = true;
                    break;
                }
            }
            if found {
                break;
            }
        }
        if !found {
            return Err("the interpreter's VM was not found (no symbol, and its code did not say where)".into());
        }
        let m = &*rt.memory;
        rt.global_symbols = file
            .global_symbols
            .iter()
            .map(|a| a.wrapping_add(bias))
            .flat_map(|at| [Some(at), m.u64(at.wrapping_add(8)).ok()])
            .flatten()
            .find(|&at| symbol_table(m, at));
        if rt.global_symbols.is_none() {
            tracing::warn!(pid, "Ruby's symbol table was not found: C functions' frames are left unnamed");
        }
        let (index, offset) = file.current_ec.ok_or("no thread-local execution context found in the file's code")?;
        let index = index.wrapping_add(bias);
        let unreadable = |e: crate::collect::remote::ReadError| format!("cannot read the TLS index at {:#x}", e.0);
        let module = m.u64(index).map_err(unreadable)?;
        let dtpoff = m.field(index, 8).map_err(unreadable)?;
        if module == 0 || module > 1 << 16 {
            return Err(format!("the TLS index holds module {module}: not loaded as expected"));
        }
        let interpreter = interpreter(&rt, file, bias)?;
        Ok(Self {
            rt,
            version: file.version.clone(),
            file: path.to_string(),
            interpreter,
            tls: (module, dtpoff.wrapping_add(offset)),
            yjit: yjit_on(pid),
        })
    }

    /// What the probes need to emit this interpreter's Ruby frames.
    pub fn probe_info(&self) -> RuntimeProc {
        let l = &self.rt.layout;
        let narrow = |v: u64| u16::try_from(v).unwrap_or(u16::MAX);
        let own = RubyProc {
            tls_module: self.tls.0,
            tls_offset: self.tls.1 as i64,
            ec_vm_stack: narrow(l.ec_vm_stack),
            ec_vm_stack_size: narrow(l.ec_vm_stack_size),
            ec_cfp: narrow(l.ec_cfp),
            cfp_size: narrow(l.cfp_size),
            cfp_pc: narrow(l.cfp_pc),
            cfp_iseq: narrow(l.cfp_iseq),
            cfp_ep: narrow(l.cfp_ep),
            iseq_body: narrow(l.iseq_body),
            body_encoded: narrow(l.body_encoded),
            _pad: [0; 3],
        };
        RuntimeProc::new(kind::RUBY, [self.interpreter.0, self.interpreter.1, 0, 0], &own)
    }
}

/// The interpreter loop, in the process: known for the file, or found from a running iseq's
/// code, whose words are its instructions' handlers in that one function (direct threading).
fn interpreter(rt: &RubyRuntime, file: &Interpreter, bias: u64) -> Result<(u64, u64), String> {
    if let Some(&(start, end)) = file.interpreter.get() {
        return Ok((start.wrapping_add(bias), end.wrapping_add(bias)));
    }
    let functions = file.functions.as_ref().ok_or("the file has no .eh_frame to tell its functions apart")?;
    for _ in 0..ATTACH_TRIES {
        let Some(handler) = a_handler(rt) else { continue };
        let found = functions
            .range_of(handler.wrapping_sub(bias))
            .filter(|r| file.text.is_some_and(|t| t.0 <= r.0 && r.1 <= t.1));
        if let Some(range) = found {
            let _ = file.interpreter.set(range);
            return Ok((range.0.wrapping_add(bias), range.1.wrapping_add(bias)));
        }
    }
    Err("the interpreter loop was not found (its iseqs hold no handler addresses: not direct-threaded?)".into())
}

/// The handler of the first instruction of an iseq some thread runs.
fn a_handler(rt: &RubyRuntime) -> Option<u64> {
    let m = &*rt.memory;
    for thread in rt.thread_list().ok()? {
        let Ok((_, ec)) = rt.thread(thread) else { continue };
        for (iseq, pc, flags, _) in rt.control_frames(ec).unwrap_or_default() {
            if iseq == 0 || pc == 0 || flags & FRAME_MAGIC_MASK == FRAME_MAGIC_CFUNC {
                continue;
            }
            let l = &rt.layout;
            let encoded = m.field(m.field(iseq, l.iseq_body).ok()?, l.body_encoded).ok()?;
            if let Ok(handler) = m.u64(encoded) {
                return Some(handler);
            }
        }
    }
    None
}

/// Whether `at` holds a symbol table: a plausible last serial, and an Array of ids.
fn symbol_table(m: &dyn RemoteMemory, at: u64) -> bool {
    let (Ok(last), Ok(ids)) = (m.u64(at), m.u64(at.wrapping_add(16))) else { return false };
    let last = last & 0xffff_ffff;
    (100..1 << 28).contains(&last) && m.u64(ids).is_ok_and(|flags| flags & 0x1f == 0x07)
}

/// YJIT is on in `pid`: its command line says `--yjit`, or its environment `RUBY_YJIT_ENABLE=1`.
fn yjit_on(pid: u32) -> bool {
    let words = |file: &str| std::fs::read(format!("/proc/{pid}/{file}")).unwrap_or_default();
    let has = |bytes: Vec<u8>, word: &[u8]| bytes.split(|&b| b == 0).any(|w| w.starts_with(word));
    has(words("cmdline"), b"--yjit") || has(words("environ"), b"RUBY_YJIT_ENABLE=1")
}
