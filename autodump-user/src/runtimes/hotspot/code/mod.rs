//! Compiled Java code named from the JVM's own memory, as its serviceability agent names it: the
//! code heap that holds an address, the block that holds it (through the heap's segment map),
//! the code blob at the block's start, and for a compiled method its `Method`, whose class,
//! name, signature and source file are symbols in its constant pool.
//!
//! The JVM runs while it is read: every walk is capped, every length checked, and what cannot be
//! read is counted, never trusted.

mod symbols;

use std::{collections::HashMap, sync::Arc};

use super::{
    lines::{self, line_at, LineLayout},
    scopes::{ScopesLayout, Sections},
    tables::cached_c_string,
    vmstructs::VmStructs,
};
use crate::collect::remote::{field_u32, field_u64, RemoteMemory};

/// Code heaps read at most (HotSpot has three with a segmented code cache).
const MAX_HEAPS: u64 = 16;
/// Segment-map hops followed at most from an address to its block's start.
const MAX_HOPS: usize = 1 << 16;
/// Longest symbol read (class and method names).
const MAX_SYMBOL: u64 = 4096;
/// Methods remembered before the cache starts over.
const MAX_METHODS: usize = 100_000;
/// Largest type size believed (a `ConstantPool` header is under 100 bytes, a `HeapBlock` 16).
const MAX_TYPE_SIZE: u64 = 4096;
/// `JVM_ACC_NATIVE`.
const ACC_NATIVE: u16 = 0x0100;
/// The segment map's mark of a free segment.
pub(super) const FREE_SEGMENT: u8 = 0xff;
/// Bytes of the segment map read at once, going back from an address's segment.
const SEGMAP_WINDOW: usize = 512;
/// Bytes of a blob read at once: its header fields all lie in its first few hundred bytes.
pub(super) const BLOB_HEADER: u64 = 512;

/// Where what naming reads is, from the tables.
#[derive(Clone, Debug)]
pub struct CodeLayout {
    heaps: u64,
    array_len: u64,
    array_data: u64,
    heap_memory: u64,
    heap_segmap: u64,
    heap_log2_segment: u64,
    space_low: u64,
    space_high: u64,
    heap_block_size: u64,
    block_used: u64,
    blob_name: u64,
    blob_size: u64,
    nmethod_method: u64,
    method_const: u64,
    method_flags: Option<u64>,
    const_constants: u64,
    const_name_index: u64,
    const_signature_index: u64,
    pool_size: u64,
    pool_holder: u64,
    pool_source_file: Option<u64>,
    klass_name: u64,
    symbol_length: u64,
    symbol_body: u64,
}

impl CodeLayout {
    /// The layout, or the first thing the tables lack (or give as garbage).
    pub fn of(vm: &VmStructs) -> Result<Self, String> {
        // A field's offset, or a size read whole, beyond what HotSpot's types measure is garbage.
        let field = |ty: &str, name: &str| match vm.value(ty, name) {
            Some(offset) if offset < MAX_TYPE_SIZE => Ok(offset),
            Some(offset) => Err(format!("{ty}::{name} at {offset}")),
            None => Err(format!("{ty}::{name}")),
        };
        let heaps = vm.value("CodeCache", "_heaps").ok_or("CodeCache::_heaps")?;
        let size = |ty: &str| match vm.size(ty) {
            Some(size) if size <= MAX_TYPE_SIZE => Ok(size),
            Some(size) => Err(format!("{ty} of {size} bytes")),
            None => Err(ty.to_string()),
        };
        Ok(Self {
            heaps,
            array_len: field("GrowableArrayBase", "_len")?,
            array_data: field("GrowableArray<int>", "_data")?,
            heap_memory: field("CodeHeap", "_memory")?,
            heap_segmap: field("CodeHeap", "_segmap")?,
            heap_log2_segment: field("CodeHeap", "_log2_segment_size")?,
            space_low: field("VirtualSpace", "_low")?,
            space_high: field("VirtualSpace", "_high")?,
            heap_block_size: size("HeapBlock")?,
            block_used: field("HeapBlock", "_header")? + field("HeapBlock::Header", "_used")?,
            blob_name: field("CodeBlob", "_name")?,
            blob_size: field("CodeBlob", "_size")?,
            nmethod_method: field("nmethod", "_method")?,
            method_const: field("Method", "_constMethod")?,
            method_flags: field("Method", "_access_flags").ok(),
            const_constants: field("ConstMethod", "_constants")?,
            const_name_index: field("ConstMethod", "_name_index")?,
            const_signature_index: field("ConstMethod", "_signature_index")?,
            pool_size: size("ConstantPool")?,
            pool_holder: field("ConstantPool", "_pool_holder")?,
            pool_source_file: field("ConstantPool", "_source_file_name_index").ok(),
            klass_name: field("Klass", "_name")?,
            symbol_length: field("Symbol", "_length")?,
            symbol_body: field("Symbol", "_body")?,
        })
    }
}

/// One code heap: where its code is committed, and its segment map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Heap {
    pub low: u64,
    pub high: u64,
    pub segmap: u64,
    pub log2_segment: u32,
}

/// What holds an address of compiled code.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Code {
    /// A compiled Java method after the methods it inlined there, innermost first.
    Method(Vec<MethodFrame>),
    /// A stub, adapter or the interpreter, by the blob's own name.
    Blob(Arc<str>),
}

/// A method's (bytecode index, line) pairs.
type LineTable = Arc<[(u32, u32)]>;

/// A method in compiled code: its name (`Chain.leafSpin(int)`), source file, and the line of
/// the bytecode the code is at, where the compiler recorded one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MethodFrame {
    pub name: Arc<str>,
    pub file: Option<Arc<str>>,
    pub line: Option<u32>,
}

/// A method's name (`Chain.leafSpin(int)`) and source file.
pub type NamedMethod = (Arc<str>, Option<Arc<str>>);
/// A class's name (`java.lang.String`) and source file.
type NamedClass = (Arc<str>, Option<Arc<str>>);

/// Counts of what naming met.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct CodeStats {
    /// Addresses named as compiled methods, and as other code blobs; inlined methods named.
    pub methods: u64,
    pub inlined: u64,
    pub blobs: u64,
    /// Addresses in the code cache in no block in use (code freed since the sample), and ones
    /// whose blob or method could not be read.
    pub free: u64,
    pub unreadable: u64,
}

/// The compiled code of one JVM.
pub struct JavaCode {
    memory: Box<dyn RemoteMemory>,
    layout: CodeLayout,
    /// Where nmethods say what they inlined, when this JDK's layout is known.
    scopes: Option<ScopesLayout>,
    /// The code cache's bounds.
    bounds: (u64, u64),
    heaps: Vec<Heap>,
    methods: HashMap<u64, Option<NamedMethod>>,
    /// Blobs' names (`nmethod`, `Interpreter`) by where they are: static strings of the JVM.
    blob_names: HashMap<u64, Arc<str>>,
    /// Classes and source files by constant pool, and symbols' text by address.
    classes: HashMap<u64, Option<NamedClass>>,
    symbols: HashMap<u64, Arc<str>>,
    /// How a method's source lines are read, when the tables say, and each method's lines.
    lines: Option<(LineLayout, HashMap<u64, Option<LineTable>>)>,
    pub stats: CodeStats,
}

impl JavaCode {
    pub fn new(
        memory: Box<dyn RemoteMemory>,
        layout: CodeLayout,
        scopes: Option<ScopesLayout>,
        bounds: (u64, u64),
    ) -> Self {
        let (heaps, methods, stats) = (Vec::new(), HashMap::new(), CodeStats::default());
        let (blob_names, classes, symbols) = (HashMap::new(), HashMap::new(), HashMap::new());
        Self { memory, layout, scopes, bounds, heaps, methods, blob_names, classes, symbols, lines: None, stats }
    }

    /// Reads source lines with `layout`.
    pub fn with_lines(mut self, layout: Option<LineLayout>) -> Self {
        self.lines = layout.map(|l| (l, HashMap::new()));
        self
    }

    /// Whether the `Method` at `method` is native (`JVM_ACC_NATIVE` in its access flags).
    pub fn native(&self, method: u64) -> bool {
        let mut flags = [0u8; 2];
        let read = self.layout.method_flags.map(|at| self.memory.read(method.wrapping_add(at), &mut flags));
        matches!(read, Some(Ok(()))) && u16::from_le_bytes(flags) & ACC_NATIVE != 0
    }

    /// The bytecode index of bytecode pointer `bcp` in the `Method` at `method`.
    pub fn bci(&self, method: u64, bcp: u64) -> Option<u32> {
        let (lines, _) = self.lines.as_ref()?;
        let constant = self.memory.field(method, self.layout.method_const).ok()?;
        let bci = bcp.checked_sub(constant.checked_add(lines.bytecodes())?)?;
        u32::try_from(bci).ok().filter(|&b| b <= u32::from(u16::MAX))
    }

    /// The source line of bytecode `bci` of the `Method` at `method` (its table read once).
    pub fn line(&mut self, method: u64, bci: u32) -> Option<u32> {
        let Self { lines, memory, layout, .. } = self;
        let (line_layout, tables) = lines.as_mut()?;
        if tables.len() >= MAX_METHODS {
            tables.clear();
        }
        let table = tables.entry(method).or_insert_with(|| {
            let constant = memory.field(method, layout.method_const).ok()?;
            lines::table(&**memory, line_layout, constant).map(Arc::from)
        });
        line_at(table.as_ref()?, bci)
    }

    pub fn contains(&self, pc: u64) -> bool {
        (self.bounds.0..self.bounds.1).contains(&pc)
    }

    /// What holds `pc`, read now; None outside the code cache.
    pub fn at(&mut self, pc: u64) -> Option<Code> {
        if !self.contains(pc) {
            return None;
        }
        // Heaps commit more as they grow: read them again when none holds the address.
        if !self.heaps.iter().any(|h| (h.low..h.high).contains(&pc)) {
            self.heaps = read_heaps(&*self.memory, &self.layout).unwrap_or_default();
        }
        let Some(heap) = self.heaps.iter().copied().find(|h| (h.low..h.high).contains(&pc)) else {
            self.stats.free += 1;
            return None;
        };
        let code = match self.blob(heap, pc) {
            Ok(Some(code)) => code,
            Ok(None) => {
                self.stats.free += 1;
                return None;
            }
            Err(()) => {
                self.stats.unreadable += 1;
                return None;
            }
        };
        match &code {
            Code::Method(frames) => {
                self.stats.methods += 1;
                self.stats.inlined += frames.len() as u64 - 1;
            }
            Code::Blob(_) => self.stats.blobs += 1,
        }
        Some(code)
    }

    /// The blob that holds `pc`: Ok(None) when its segment is free or its block not in use.
    /// Three reads: the segment map before `pc`, the block's header, the nmethod's scopes.
    fn blob(&mut self, heap: Heap, pc: u64) -> Result<Option<Code>, ()> {
        let Some(segment) = block_start(&*self.memory, heap, (pc - heap.low) >> heap.log2_segment)? else {
            return Ok(None);
        };
        let l = &self.layout;
        let block = heap.low + (segment << heap.log2_segment);
        let mut header = vec![0u8; (l.heap_block_size + BLOB_HEADER) as usize];
        self.memory.read(block, &mut header).map_err(|_| ())?;
        if header.get(l.block_used as usize).is_none_or(|&used| used == 0) {
            return Ok(None);
        }
        let (blob, fields) = (block + l.heap_block_size, &header[l.heap_block_size as usize..]);
        let size = field_u32(fields, l.blob_size).ok_or(())? as i32;
        if size <= 0 || pc < blob || pc >= blob.saturating_add(size as u64) {
            return Ok(None);
        }
        let name_at = field_u64(fields, l.blob_name).ok_or(())?;
        let name = cached_c_string(&mut self.blob_names, &*self.memory, name_at).ok_or(())?;
        // A JNI method's compiled wrapper is an nmethod too ("native nmethod" up to JDK 22).
        if &*name != "nmethod" && &*name != "native nmethod" {
            return Ok(Some(Code::Blob(name)));
        }
        let method = field_u64(fields, l.nmethod_method).ok_or(())?;
        // The methods it inlined at `pc`, innermost first, then its own.
        let mut methods = match &self.scopes {
            Some(scopes) => Sections::read(&*self.memory, scopes, blob, fields)
                .map(|s| s.methods_at(scopes, pc))
                .unwrap_or_default(),
            None => Vec::new(),
        };
        if methods.last().is_none_or(|&(m, _)| m != method) {
            methods.push((method, None));
        }
        let mut frames = Vec::with_capacity(methods.len());
        for (method, bci) in methods {
            let (name, file) = self.named(method).ok_or(())?;
            let line = bci.and_then(|bci| self.line(method, bci));
            frames.push(MethodFrame { name, file, line });
        }
        Ok(Some(Code::Method(frames)))
    }

    /// The name of the `Method` at `method`, cached.
    pub fn named(&mut self, method: u64) -> Option<NamedMethod> {
        if self.methods.len() >= MAX_METHODS {
            self.methods.clear();
        }
        if let Some(known) = self.methods.get(&method) {
            return known.clone();
        }
        let named = self.method(method);
        self.methods.insert(method, named.clone());
        named
    }
}

/// The code heaps, as committed now.
pub fn read_heaps(m: &dyn RemoteMemory, l: &CodeLayout) -> Option<Vec<Heap>> {
    let array = m.u64(l.heaps).ok()?;
    let len = m.i32(array.wrapping_add(l.array_len)).ok()?;
    let data = m.field(array, l.array_data).ok()?;
    let len = u64::try_from(len).ok()?.min(MAX_HEAPS);
    let mut heaps = Vec::new();
    for i in 0..len {
        let Ok(heap) = m.u64(data.wrapping_add(8 * i)) else { continue };
        let space = |at: u64| {
            let space = heap.wrapping_add(at);
            Some((m.field(space, l.space_low).ok()?, m.field(space, l.space_high).ok()?))
        };
        let (Some((low, high)), Some((segmap, _))) = (space(l.heap_memory), space(l.heap_segmap)) else {
            continue;
        };
        let Ok(log2) = m.i32(heap.wrapping_add(l.heap_log2_segment)) else { continue };
        if low < high && (4..=16).contains(&log2) {
            heaps.push(Heap { low, high, segmap, log2_segment: log2 as u32 });
        }
    }
    Some(heaps)
}

/// The first segment of the block that holds `segment` of `heap`, following the segment map's
/// hops back (read a window at a time): None when the segment is free.
fn block_start(m: &dyn RemoteMemory, heap: Heap, mut segment: u64) -> Result<Option<u64>, ()> {
    let mut window = [0u8; SEGMAP_WINDOW];
    let (mut first, mut hops) = (u64::MAX, 0);
    loop {
        if segment < first || segment >= first + SEGMAP_WINDOW as u64 {
            first = segment.saturating_sub(SEGMAP_WINDOW as u64 - 1);
            let len = (segment - first + 1) as usize;
            m.read(heap.segmap.wrapping_add(first), &mut window[..len]).map_err(|_| ())?;
        }
        let hop = window[(segment - first) as usize];
        if hops == 0 && hop == FREE_SEGMENT {
            return Ok(None);
        }
        if hop == 0 {
            return Ok(Some(segment));
        }
        segment = segment.checked_sub(u64::from(hop)).ok_or(())?;
        hops += 1;
        if hops > MAX_HOPS {
            return Err(());
        }
    }
}
