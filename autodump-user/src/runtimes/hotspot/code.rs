//! Compiled Java code named from the JVM's own memory, as its serviceability agent names it: the
//! code heap that holds an address, the block that holds it (through the heap's segment map),
//! the code blob at the block's start, and for a compiled method its `Method`, whose class,
//! name, signature and source file are symbols in its constant pool.
//!
//! The JVM runs while it is read: every walk is capped, every length checked, and what cannot be
//! read is counted, never trusted.

use std::{collections::HashMap, sync::Arc};

use super::{
    lines::{self, line_at, LineLayout},
    scopes::{ScopesLayout, Sections},
    signature::parameters,
    tables::c_string,
    vmstructs::VmStructs,
};
use crate::collect::remote::RemoteMemory;

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
const FREE_SEGMENT: u8 = 0xff;

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
        let field = |ty: &str, name: &str| vm.value(ty, name).ok_or_else(|| format!("{ty}::{name}"));
        // A size is read whole: one beyond what HotSpot's types measure is garbage.
        let size = |ty: &str| match vm.size(ty) {
            Some(size) if size <= MAX_TYPE_SIZE => Ok(size),
            Some(size) => Err(format!("{ty} of {size} bytes")),
            None => Err(ty.to_string()),
        };
        Ok(Self {
            heaps: field("CodeCache", "_heaps")?,
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
    /// A compiled Java method, `Chain.leafSpin(int)` and its source file, after the methods it
    /// inlined there, innermost first.
    Method(Vec<NamedMethod>),
    /// A stub, adapter or the interpreter, by the blob's own name.
    Blob(Arc<str>),
}

/// A method's (bytecode index, line) pairs.
type LineTable = Arc<[(u32, u32)]>;

/// A method's name (`Chain.leafSpin(int)`) and source file.
pub type NamedMethod = (Arc<str>, Option<Arc<str>>);

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
        Self { memory, layout, scopes, bounds, heaps, methods, lines: None, stats }
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
    fn blob(&mut self, heap: Heap, pc: u64) -> Result<Option<Code>, ()> {
        let m = &*self.memory;
        let l = &self.layout;
        let mut segment = (pc - heap.low) >> heap.log2_segment;
        let mut hop = [0u8; 1];
        m.read(heap.segmap.wrapping_add(segment), &mut hop).map_err(|_| ())?;
        if hop[0] == FREE_SEGMENT {
            return Ok(None);
        }
        let mut hops = 0;
        while hop[0] > 0 {
            segment = segment.checked_sub(u64::from(hop[0])).ok_or(())?;
            hops += 1;
            if hops > MAX_HOPS {
                return Err(());
            }
            m.read(heap.segmap.wrapping_add(segment), &mut hop).map_err(|_| ())?;
        }
        let block = heap.low + (segment << heap.log2_segment);
        let mut header = vec![0u8; l.heap_block_size as usize];
        m.read(block, &mut header).map_err(|_| ())?;
        if header.get(l.block_used as usize).is_none_or(|&used| used == 0) {
            return Ok(None);
        }
        let blob = block + l.heap_block_size;
        let size = m.i32(blob.wrapping_add(l.blob_size)).map_err(|_| ())?;
        if size <= 0 || pc < blob || pc >= blob.saturating_add(size as u64) {
            return Ok(None);
        }
        let name = c_string(m, m.field(blob, l.blob_name).map_err(|_| ())?).ok_or(())?;
        // A JNI method's compiled wrapper is an nmethod too ("native nmethod" up to JDK 22).
        if name != "nmethod" && name != "native nmethod" {
            return Ok(Some(Code::Blob(name.into())));
        }
        let method = m.field(blob, l.nmethod_method).map_err(|_| ())?;
        // The methods it inlined at `pc`, innermost first, then its own.
        let mut methods = match &self.scopes {
            Some(scopes) => Sections::read(m, scopes, blob).map(|s| s.methods_at(scopes, pc)).unwrap_or_default(),
            None => Vec::new(),
        };
        if methods.last() != Some(&method) {
            methods.push(method);
        }
        let frames: Option<Vec<NamedMethod>> = methods.iter().map(|&m| self.named(m)).collect();
        Ok(Some(Code::Method(frames.ok_or(())?)))
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

    /// `Class.method(parameters)` and the source file of the `Method` at `method`.
    fn method(&self, method: u64) -> Option<NamedMethod> {
        let (m, l) = (&*self.memory, &self.layout);
        let constant = m.field(method, l.method_const).ok()?;
        let mut indexes = [0u8; 4];
        m.read(constant.wrapping_add(l.const_name_index), &mut indexes[..2]).ok()?;
        m.read(constant.wrapping_add(l.const_signature_index), &mut indexes[2..]).ok()?;
        let pool = m.field(constant, l.const_constants).ok()?;
        let holder = m.field(pool, l.pool_holder).ok()?;
        let symbol_at = |index: u16| m.u64(pool.wrapping_add(l.pool_size).wrapping_add(8 * u64::from(index))).ok();
        let name = self.symbol(symbol_at(u16::from_le_bytes([indexes[0], indexes[1]]))?)?;
        let signature = self.symbol(symbol_at(u16::from_le_bytes([indexes[2], indexes[3]]))?)?;
        let class = self.symbol(m.field(holder, l.klass_name).ok()?)?.replace('/', ".");
        let file = l.pool_source_file.and_then(|at| {
            let mut index = [0u8; 2];
            m.read(pool.wrapping_add(at), &mut index).ok()?;
            self.symbol(symbol_at(u16::from_le_bytes(index))?)
        });
        let parameters = parameters(&signature)?;
        Some((format!("{class}.{name}({parameters})").into(), file.map(Arc::from)))
    }

    /// A `Symbol`'s text.
    fn symbol(&self, at: u64) -> Option<String> {
        let (m, l) = (&*self.memory, &self.layout);
        let mut len = [0u8; 2];
        m.read(at.wrapping_add(l.symbol_length), &mut len).ok()?;
        let len = u64::from(u16::from_le_bytes(len)).min(MAX_SYMBOL);
        let mut body = vec![0u8; len as usize];
        m.read(at.wrapping_add(l.symbol_body), &mut body).ok()?;
        // Modified UTF-8: what is not UTF-8 is shown, not dropped.
        Some(String::from_utf8_lossy(&body).into_owned())
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
