//! HotSpot JVMs read from outside, with no flag and no attach: the JVM's own description of its
//! layout (`vmstructs.rs`, the tables the serviceability agent reads), and from it where its
//! code cache is. A `libjvm.so` is read once (`JvmFiles`) for every JVM that maps it; each JVM's
//! tables are read from its memory at attach, and its summary section says what they hold and
//! whether what walking and naming Java frames needs is there (`layout.rs`). Compiled code a
//! perf map does not name is named from the JVM's memory (`code.rs`, `names.rs`).

pub mod blobs;
pub mod code;
pub mod layout;
pub mod lines;
mod names;
pub mod objects;
pub mod scopes;
pub mod signature;
mod tables;
pub mod threads;
pub mod vmstructs;

use std::{
    cell::RefCell,
    rc::Rc,
    sync::{Arc, OnceLock},
};

use autodump_common::runtimes::{hotspot::HotSpotProc, kind, RuntimeProc};
use object::{Object, ObjectSymbol};
use serde::Serialize;

use crate::{
    collect::remote::{ProcessMemory, RemoteMemory},
    files::{identity::open_path, segments::Segments, shared::PerFile},
    record::{Profiles, Recorder},
    runtimes::{
        args::RuntimeArgs,
        seam::{Instance, Loader, Process, Runtime, RuntimeBundle, RuntimeReport, Window},
    },
    symbolize::RuntimeNames,
    write::BundleFile,
};
use blobs::{BlobLayout, CodeMap};
use code::{CodeLayout, CodeStats, JavaCode};
use layout::{CodeCache, Needed};
use names::{HotSpotNames, Naming};
use scopes::ScopesLayout;
use vmstructs::{Exports, VmStructs};

pub const RUNTIME: Runtime = Runtime {
    name: "hotspot",
    loader: |_: &RuntimeArgs| Box::new(HotSpotLoader { files: PerFile::default() }),
    metric: None,
    frame_kind: Some(kind::HOTSPOT),
    file_reader: None,
};

/// What a `libjvm.so` says: where its tables' symbols are (file addresses), when it has them,
/// and its tables, once a JVM has shown them whole (they are the same in every JVM that maps the
/// file; their statics' addresses are kept relative to the file's load address).
struct JvmFile {
    exports: Option<Exports>,
    /// What a thread's name and state are read through (the file's symbol table).
    objects: objects::ObjectSymbols,
    segments: Segments,
    tables: OnceLock<Arc<VmStructs>>,
}

impl JvmFile {
    fn parse(elf: &object::File<'_>, _data: &[u8]) -> Self {
        let symbols: std::collections::HashMap<&str, u64> = elf
            .dynamic_symbols()
            .filter(|s| s.name().is_ok_and(|n| n.starts_with("gHotSpotVM")))
            .filter_map(|s| Some((s.name().ok()?, s.address())))
            .collect();
        let exports = Exports::find(|name| symbols.get(name).copied());
        let objects = objects::ObjectSymbols::find(elf);
        Self { exports, objects, segments: Segments::of(elf), tables: OnceLock::new() }
    }
}

struct HotSpotLoader {
    files: PerFile<JvmFile>,
}

impl Loader for HotSpotLoader {
    fn name(&self) -> &'static str {
        "hotspot"
    }

    /// A process that maps a `libjvm.so`.
    fn attach(&mut self, process: &Process<'_>) -> Option<Box<dyn Instance>> {
        let (pid, maps) = (process.pid, process.maps?);
        let m = maps.mappings().find(|m| m.is_file() && m.module() == "libjvm.so")?;
        let path = open_path(pid, m.start, m.end, &m.path);
        let file = self.files.get(&path, JvmFile::parse)?;
        let bias =
            file.segments.delta_for_mapping(m.file_offset).map(|d| m.start.wrapping_sub(m.file_offset.wrapping_add(d)));
        let (status, code) = match (&file.exports, bias) {
            (None, _) => (HotSpotStatus::failed(&m.path, "libjvm.so exports no gHotSpotVMStructs tables"), None),
            (_, None) => (HotSpotStatus::failed(&m.path, "libjvm.so's mapping matches none of its segments"), None),
            (Some(exports), Some(bias)) => read(pid, &file, &exports.biased(bias), bias, &m.path),
        };
        let (code, walk) = code.map_or((None, None), |(code, walk)| (Some(code), walk));
        match &status.error {
            None => {
                tracing::info!(pid, release = ?status.vm_release, shared = status.tables_shared, "HotSpot JVM: its tables read")
            }
            Some(e) => tracing::warn!(pid, "HotSpot JVM whose tables cannot be read: {e}"),
        }
        let naming = code.map(|code| Rc::new(RefCell::new(Naming::new(code))));
        let mut instance = HotSpotInstance { status, naming, walk: None, first: None };
        if let Some(walk) = walk {
            instance.start_walk(walk);
        }
        Some(Box::new(instance))
    }

    fn files_read(&self) -> Option<(&'static str, u64)> {
        Some(("jvm_files_read", self.files.reads))
    }
}

/// Reads a JVM's tables (or takes them from the file, when another JVM showed them), and
/// through them its release and code cache: what it says, and its compiled code, to be named,
/// when the tables say how.
fn read(
    pid: u32,
    jvm: &JvmFile,
    exports: &Exports,
    bias: u64,
    file: &str,
) -> (HotSpotStatus, Option<(JavaCode, Option<Walk>)>) {
    let started = std::time::Instant::now();
    let memory = ProcessMemory::new(pid);
    let m: &dyn RemoteMemory = &memory;
    let shared = jvm.tables.get();
    let vm = match shared {
        Some(tables) => tables.rebased(bias, true),
        None => match VmStructs::read(m, exports) {
            Ok(vm) => {
                if vm.unreadable == 0 && !vm.truncated {
                    let _ = jvm.tables.set(Arc::new(vm.rebased(bias, false)));
                }
                vm
            }
            Err(e) => return (HotSpotStatus::failed(file, &e.to_string()), None),
        },
    };
    let needed = Needed::check(&vm);
    let vm_release = layout::vm_release(m, &vm);
    let code_cache = CodeCache::read(m, &vm).map_err(|e| e.to_string());
    tracing::debug!(pid, ms = started.elapsed().as_millis() as u64, "HotSpot tables read");
    let layout = CodeLayout::of(&vm);
    let mut inlining = false;
    let code = match (&layout, &code_cache) {
        (Ok(layout), Ok(cache)) => {
            let major = vm_release.as_deref().and_then(|r| r.split(['.', '+', '-']).next()?.parse().ok());
            let scopes = ScopesLayout::of(&vm, major);
            inlining = scopes.is_some();
            let bounds = (cache.low, cache.high);
            let code = JavaCode::new(Box::new(ProcessMemory::new(pid)), layout.clone(), scopes, bounds)
                .with_lines(lines::LineLayout::of(&vm, major));
            let objects = jvm.objects.biased(bias, &vm, major);
            Some((code, Walk::of(pid, &vm, layout, bounds, objects)))
        }
        _ => None,
    };
    let status = HotSpotStatus {
        file: file.to_string(),
        vm_release,
        tables_shared: shared.is_some(),
        fields: vm.fields.len() - vm.statics(),
        static_fields: vm.statics(),
        types: vm.types.len(),
        int_constants: vm.int_constants.len(),
        long_constants: vm.long_constants.len(),
        unreadable: vm.unreadable,
        truncated: vm.truncated,
        layout: needed.found,
        missing: needed.missing,
        code_cache: code_cache.as_ref().ok().cloned(),
        code_cache_error: code_cache.err(),
        naming_error: layout.err().map(|missing| format!("the tables lack {missing}")),
        inlining,
        error: None,
        ..HotSpotStatus::default()
    };
    (status, code)
}

/// The summary's `hotspot` section.
#[derive(Clone, Debug, Default, Serialize)]
struct HotSpotStatus {
    /// The libjvm.so, as the process maps it.
    file: String,
    /// `Abstract_VM_Version::_s_vm_release`: "17.0.17+10-Debian-1deb12u1".
    vm_release: Option<String>,
    /// The tables came from another JVM that maps the same libjvm.so (read once per file).
    tables_shared: bool,
    /// Entries of each table (fields at an offset, and statics).
    fields: usize,
    static_fields: usize,
    types: usize,
    int_constants: usize,
    long_constants: usize,
    /// Entries whose names could not be read, and whether a table ran past its cap.
    unreadable: u32,
    truncated: bool,
    /// What walking and naming Java frames reads, as the tables give it ("CodeBlob::_frame_size":
    /// its offset; a static's address; a type's size), and what the tables lack of it.
    layout: std::collections::BTreeMap<String, u64>,
    missing: Vec<String>,
    code_cache: Option<CodeCache>,
    code_cache_error: Option<String>,
    /// Why compiled code is not named from the JVM's memory, when it is not.
    naming_error: Option<String>,
    /// Inlined methods are named (as their own frames): the JDK lays its nmethods out as 17 to
    /// 22 do.
    inlining: bool,
    /// What naming compiled code from the JVM's memory met (`methods`, `blobs`: addresses named;
    /// `free`: in no code in use; `unreadable`), and the share of samples with a frame it named.
    naming: Option<CodeStats>,
    cpu_share_named: Option<f64>,
    offcpu_share_named: Option<f64>,
    /// Java frames are walked without frame pointers (the probes walk the code cache by each
    /// blob's frame and emit interpreted frames' methods), or why not; the code cache's blobs
    /// at the last change, and blocks whose blob could not be read then.
    frames_walked: bool,
    walk_error: Option<String>,
    code_blobs: usize,
    code_blobs_unreadable: u64,
    /// Why the tables could not be read at all.
    error: Option<String>,
}

impl HotSpotStatus {
    fn failed(file: &str, why: &str) -> Self {
        Self { file: file.to_string(), error: Some(why.to_string()), ..Self::default() }
    }
}

struct HotSpotInstance {
    status: HotSpotStatus,
    /// Its compiled code, shared with the symbolizer, which names from it.
    naming: Option<Rc<RefCell<Naming>>>,
    walk: Option<Walk>,
    /// The code cache's blobs as read at attach, for the first rows.
    first: Option<Vec<blobs::Blob>>,
}

/// What the probes need to walk a JVM's Java frames: its code cache's blobs, the interpreter's
/// code, and where an interpreter frame keeps its method.
struct Walk {
    map: CodeMap,
    own: HotSpotProc,
    interpreter: Option<(u64, u64)>,
    /// The code cache's blobs as last read, and where the JVM's threads are (for the dump).
    blobs: Vec<blobs::Blob>,
    threads: Option<(threads::ThreadLayout, u32)>,
}

/// Slots of an x86_64 interpreter frame, in words from its frame pointer
/// (`frame::interpreter_frame_method_offset`, `..._bcp_offset`: the same from JDK 9 to 25).
const FRAME_METHOD_SLOT: i64 = -3;
const FRAME_BCP_SLOT: i64 = -8;

impl Walk {
    fn of(
        pid: u32,
        vm: &VmStructs,
        layout: &CodeLayout,
        bounds: (u64, u64),
        objects: Option<objects::Objects>,
    ) -> Option<Self> {
        let blobs = BlobLayout::of(vm).ok()?;
        let own = HotSpotProc {
            frame_method: FRAME_METHOD_SLOT * 8,
            frame_bcp: FRAME_BCP_SLOT * 8,
            method_const: vm.value("Method", "_constMethod")?,
            const_method_size: vm.size("ConstMethod")?,
        };
        let map = CodeMap::new(Box::new(ProcessMemory::new(pid)), layout.clone(), blobs, bounds);
        let threads = threads::ThreadLayout::of(vm, objects).map(|l| (l, pid));
        Some(Self { map, own, interpreter: None, blobs: Vec::new(), threads })
    }
}

impl HotSpotInstance {
    fn start_walk(&mut self, mut walk: Walk) {
        let blobs = walk.map.changed().unwrap_or_default();
        walk.interpreter = blobs.iter().find(|b| &*b.name == "Interpreter").map(|b| (b.begin, b.end));
        self.status.code_blobs = blobs.len();
        self.status.code_blobs_unreadable = walk.map.unreadable;
        self.first = Some(blobs);
        self.walk = Some(walk);
    }
}

impl Instance for HotSpotInstance {
    fn probe(&self) -> Option<Result<RuntimeProc, String>> {
        let Some(walk) = &self.walk else {
            return Some(Err(self
                .status
                .error
                .clone()
                .unwrap_or_else(|| "the tables lack the code cache's layout".into())));
        };
        let Some((start, end)) = walk.interpreter else {
            return Some(Err("the code cache holds no interpreter".into()));
        };
        Some(Ok(RuntimeProc::new(kind::HOTSPOT, [start, end, 0, 0], &walk.own)))
    }

    fn names_code(&self) -> bool {
        self.naming.is_some() && self.walk.is_some()
    }

    fn probed(&mut self, result: Result<(), String>) {
        self.status.frames_walked = result.is_ok();
        self.status.walk_error = result.err();
    }

    fn code_rows(&mut self) -> Option<crate::unwind::code_rows::CodeRows> {
        let walk = self.walk.as_mut()?;
        let blobs = match self.first.take() {
            Some(blobs) => blobs,
            None => walk.map.changed()?,
        };
        self.status.code_blobs = blobs.len();
        self.status.code_blobs_unreadable = walk.map.unreadable;
        let changed = walk.map.take_changed();
        if let Some(naming) = &self.naming {
            naming.borrow_mut().changed.extend(changed);
        }
        let rows = walk.map.rows(&blobs);
        walk.blobs = blobs;
        Some(rows)
    }

    /// A bundle of a live JVM gains its Java threads (`java-threads.txt`).
    fn bundle(&mut self, _recorder: &mut Recorder, window: &Window) -> RuntimeBundle {
        let mut bundle = RuntimeBundle::default();
        let (Some(walk), Some(naming), true) = (&self.walk, &self.naming, window.alive) else { return bundle };
        let Some((layout, pid)) = &walk.threads else { return bundle };
        let memory = ProcessMemory::new(*pid);
        let dump = threads::read(&memory, layout, &walk.blobs, &mut naming.borrow_mut().code);
        if let Some(dump) = dump {
            let pid = *pid;
            let names = move |tid: u32| {
                let comm = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/comm")).unwrap_or_default();
                comm.trim_end().to_string()
            };
            let render = Box::new(move |w: &mut dyn std::io::Write| threads::write(&dump, names, w));
            bundle.files.push(BundleFile { name: "java-threads.txt", render });
        }
        bundle
    }

    fn names(&mut self) -> Option<Box<dyn RuntimeNames>> {
        Some(Box::new(HotSpotNames(self.naming.clone()?)))
    }

    fn report(&self, profiles: &Profiles) -> Option<RuntimeReport> {
        let mut status = self.status.clone();
        if let Some(naming) = &self.naming {
            let naming = naming.borrow();
            let ours = |l: &crate::symbolize::Location| naming.named.contains(&l.address);
            status.naming = Some(naming.code.stats);
            status.cpu_share_named = profiles.cpu().share_with(ours);
            status.offcpu_share_named = profiles.offcpu().share_with(ours);
        }
        let status = &status;
        let mut report = RuntimeReport::new("hotspot", status);
        if let Some(error) = &status.error {
            report.notes.push(format!("the JVM's own tables (gHotSpotVMStructs) could not be read: {error}"));
        } else if !status.missing.is_empty() {
            report.notes.push(format!(
                "this JVM's tables lack what walking its Java frames reads: {}",
                status.missing.join(", ")
            ));
        }
        Some(report)
    }
}
