//! The code cache as the probes' walk needs it: every code blob, where its code is and what its
//! frame is like, turned into unwind rows for the code cache (`unwind::code_rows`). A compiled
//! method's frame has a fixed size (the blob's `_frame_size`), so its caller is found without a
//! frame pointer; the interpreter keeps a frame pointer and saves its caller's stack pointer;
//! most stubs keep a frame pointer, some have no frame. A compiled frame being set up or torn
//! down is told by the instruction interrupted (the probes' `unwind::fixed`). What is none of
//! these (adapters) gets a row that stops the walk, counted: never guessed.
//!
//! Blocks are found from each heap's segment map, read whole, and a blob is read only when its
//! block is new: a calm JVM costs one read of its segment maps an interval.

use std::{collections::HashMap, sync::Arc};

use autodump_common::unwind::{cfa, UnwindRow, RBP_UNCHANGED};

use super::{
    code::{read_heaps, CodeLayout, Heap, BLOB_HEADER, FREE_SEGMENT},
    tables::cached_c_string,
    vmstructs::VmStructs,
};
use crate::{
    collect::remote::{field_u32, field_u64, read_near, RemoteMemory},
    unwind::code_rows::CodeRows,
};

/// Largest segment map read (a 2 GiB code cache of 64-byte segments).
const MAX_SEGMAP: u64 = 32 << 20;
/// The segment map's mark of a block's first segment.
const BLOCK_START: u8 = 0;

/// Where a blob's code and frame are described, by JDK.
#[derive(Clone, Debug)]
pub struct BlobLayout {
    block_size: u64,
    block_used: u64,
    name: u64,
    frame_size: u64,
    frame_complete: u64,
    /// `_frame_complete_offset` is an `int16_t` (JDK 23 on), not an `int`.
    complete_short: bool,
    code: CodeFields,
}

/// Where a blob's code begins and ends: pointers up to JDK 22, offsets in the blob from 23.
#[derive(Clone, Copy, Debug)]
enum CodeFields {
    Pointers { begin: u64, end: u64 },
    Offsets { begin: u64, end: u64 },
}

impl BlobLayout {
    pub fn of(vm: &VmStructs) -> Result<Self, String> {
        let field = |name: &str| vm.value("CodeBlob", name).ok_or_else(|| format!("CodeBlob::{name}"));
        let code = match (vm.value("CodeBlob", "_code_begin"), vm.value("CodeBlob", "_code_end")) {
            (Some(begin), Some(end)) => CodeFields::Pointers { begin, end },
            _ => CodeFields::Offsets { begin: field("_code_offset")?, end: field("_data_offset")? },
        };
        let block = |name: &str| vm.value("HeapBlock", name).ok_or_else(|| format!("HeapBlock::{name}"));
        Ok(Self {
            block_size: vm.size("HeapBlock").filter(|&s| s <= 64).ok_or("HeapBlock")?,
            block_used: block("_header")? + vm.value("HeapBlock::Header", "_used").ok_or("HeapBlock::Header::_used")?,
            name: field("_name")?,
            frame_size: field("_frame_size")?,
            frame_complete: field("_frame_complete_offset")?,
            complete_short: matches!(code, CodeFields::Offsets { .. }),
            code,
        })
    }
}

/// How a blob's frame is walked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Frame {
    /// A fixed size in bytes (compiled methods, runtime stubs), from `complete` bytes into its
    /// code (before that, the frame is being set up).
    Fixed { size: u32, complete: u32 },
    /// The template interpreter.
    Interpreter,
    /// Linked by its frame pointer (the stubs `StubRoutines` generates).
    Linked,
    /// No frame: its caller's return address is on top of the stack (method handle adapters,
    /// vtable stubs).
    None,
    /// Not known (adapters that move the return address): the walk stops.
    Unknown,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Blob {
    pub begin: u64,
    pub end: u64,
    pub name: Arc<str>,
    pub frame: Frame,
}

impl Blob {
    fn frame_of(name: &str, frame_size: i32, complete: i32) -> Frame {
        match name {
            _ if frame_size > 0 && frame_size < 1 << 16 => {
                Frame::Fixed { size: frame_size as u32 * 8, complete: complete.max(0) as u32 }
            }
            "Interpreter" => Frame::Interpreter,
            _ if name.starts_with("StubRoutines") => Frame::Linked,
            "MethodHandles adapters" | "vtable chunks" => Frame::None,
            _ => Frame::Unknown,
        }
    }
}

/// The blobs of one JVM's code cache, read again as its segment maps change.
pub struct CodeMap {
    memory: Box<dyn RemoteMemory>,
    heaps_layout: CodeLayout,
    layout: BlobLayout,
    bounds: (u64, u64),
    /// Each heap's segment map as last read, and buffers to read them into next.
    segmaps: Vec<(Heap, Vec<u8>)>,
    spare: Vec<Vec<u8>>,
    /// Blocks by (address, segments), sorted, with their blob (None: not in use).
    blocks: Vec<((u64, u64), Option<Blob>)>,
    names: HashMap<u64, Arc<str>>,
    /// Blocks whose blob could not be read, at the last change.
    pub unreadable: u64,
    /// Code that was freed, or is new, since `take_changed` was last called: what was named
    /// there may now be another method.
    changed: Vec<(u64, u64)>,
}

impl CodeMap {
    pub fn new(
        memory: Box<dyn RemoteMemory>,
        heaps_layout: CodeLayout,
        layout: BlobLayout,
        bounds: (u64, u64),
    ) -> Self {
        let (segmaps, blocks, names) = (Vec::new(), Vec::new(), HashMap::new());
        let (spare, changed) = (Vec::new(), Vec::new());
        Self { memory, heaps_layout, layout, bounds, segmaps, spare, blocks, names, unreadable: 0, changed }
    }

    /// The code ranges freed or new since the last call (none at the first read).
    pub fn take_changed(&mut self) -> Vec<(u64, u64)> {
        std::mem::take(&mut self.changed)
    }

    /// Reads the segment maps; the blobs, sorted, when anything changed since the last call.
    pub fn changed(&mut self) -> Option<Vec<Blob>> {
        let heaps = read_heaps(&*self.memory, &self.heaps_layout)?;
        // The maps are read into the buffers of the last read but one: no pages to fault in.
        let mut spare = std::mem::take(&mut self.spare);
        let mut segmaps = Vec::new();
        for heap in heaps {
            let len = (heap.high - heap.low) >> heap.log2_segment;
            if len > MAX_SEGMAP {
                continue;
            }
            let mut bytes = spare.pop().unwrap_or_default();
            bytes.clear();
            bytes.resize(len as usize, 0);
            if read_chunked(&*self.memory, heap.segmap, &mut bytes) {
                segmaps.push((heap, bytes));
            } else {
                spare.push(bytes);
            }
        }
        let same = segmaps == self.segmaps;
        let done = if same { segmaps } else { std::mem::replace(&mut self.segmaps, segmaps) };
        spare.extend(done.into_iter().map(|(_, bytes)| bytes));
        self.spare = spare;
        (!same).then(|| self.read_blobs())
    }

    fn read_blobs(&mut self) -> Vec<Blob> {
        let mut blocks: Vec<(u64, u64)> = Vec::new();
        for (heap, map) in &self.segmaps {
            let mut i = 0;
            while i < map.len() {
                if map[i] != BLOCK_START {
                    i += 1;
                    continue;
                }
                let rest = &map[i + 1..];
                let len = 1 + rest.iter().position(|&b| b == BLOCK_START || b == FREE_SEGMENT).unwrap_or(rest.len());
                blocks.push((heap.low + ((i as u64) << heap.log2_segment), len as u64));
                i += len;
            }
        }
        blocks.sort_unstable();
        // Both lists are sorted: a block kept as it was keeps its blob, and only new ones are read.
        let old = std::mem::take(&mut self.blocks);
        let (mut kept, mut new) = (Vec::with_capacity(blocks.len()), Vec::new());
        let mut old_blocks = old.into_iter().peekable();
        let mut gone = |blob: Option<Blob>| self.changed.extend(blob.map(|b| (b.begin, b.end)));
        for b in blocks {
            while let Some(o) = old_blocks.next_if(|o| o.0 < b) {
                gone(o.1);
            }
            match old_blocks.next_if(|o| o.0 == b) {
                Some(o) => kept.push(Some(o)),
                None => {
                    new.push((b, kept.len()));
                    kept.push(None);
                }
            }
        }
        old_blocks.for_each(|o| gone(o.1));
        let l = self.layout.clone();
        let addrs: Vec<u64> = new.iter().map(|n| n.0 .0).collect();
        let mut headers = Vec::new();
        read_near(&*self.memory, &addrs, (l.block_size + BLOB_HEADER) as usize, |i, bytes| {
            headers.push((i, bytes.to_vec()));
        });
        self.unreadable = (new.len() - headers.len()) as u64;
        for (i, bytes) in headers {
            let (block, at) = new[i];
            let blob = self.blob(block.0, &bytes);
            self.changed.extend(blob.as_ref().map(|b| (b.begin, b.end)));
            kept[at] = Some((block, blob));
        }
        // A new block whose blob could not be read is left out, to be read again next time.
        let kept: Vec<_> = kept.into_iter().flatten().collect();
        self.blocks = kept;
        let mut blobs: Vec<Blob> = self.blocks.iter().filter_map(|(_, b)| b.clone()).collect();
        blobs.sort_by_key(|b| b.begin);
        blobs
    }

    /// The blob in the block at `block`, whose first bytes are `bytes`: None when not in use.
    fn blob(&mut self, block: u64, bytes: &[u8]) -> Option<Blob> {
        let l = &self.layout;
        if bytes.get(l.block_used as usize).is_none_or(|&used| used == 0) {
            return None;
        }
        let blob = block + l.block_size;
        let at = |offset: u64| l.block_size + offset;
        let (begin, end) = match l.code {
            CodeFields::Pointers { begin, end } => (field_u64(bytes, at(begin))?, field_u64(bytes, at(end))?),
            CodeFields::Offsets { begin, end } => {
                let offset = |o| Some(blob + u64::from(field_u32(bytes, at(o))?));
                (offset(begin)?, offset(end)?)
            }
        };
        if begin < blob || end <= begin || end - begin > 1 << 28 || begin < self.bounds.0 || end > self.bounds.1 {
            return None;
        }
        let frame_size = field_u32(bytes, at(l.frame_size))? as i32;
        let complete = field_u32(bytes, at(l.frame_complete))?;
        let complete = if l.complete_short { complete as u16 as i16 as i32 } else { complete as i32 };
        let name = cached_c_string(&mut self.names, &*self.memory, field_u64(bytes, at(l.name))?)?;
        let frame = Blob::frame_of(&name, frame_size, complete);
        Some(Blob { begin, end, name, frame })
    }

    /// Rows that walk `blobs` (sorted), relative to the code cache's low bound.
    pub fn rows(&self, blobs: &[Blob]) -> CodeRows {
        rows(self.bounds, blobs)
    }
}

/// Rows that walk `blobs` (sorted) of the code cache at `bounds`, relative to its low bound.
fn rows(bounds: (u64, u64), blobs: &[Blob]) -> CodeRows {
    let base = bounds.0;
    let row = |at: u64, cfa_kind: u8, cfa_offset: i32, rbp_offset: i16| UnwindRow {
        pc: (at - base) as u32,
        cfa_offset,
        rbp_offset,
        cfa_kind,
        ..UnwindRow::default()
    };
    let mut rows = Vec::with_capacity(2 * blobs.len());
    for (i, b) in blobs.iter().enumerate() {
        match b.frame {
            Frame::Fixed { size, complete } => {
                if complete > 0 {
                    rows.push(row(b.begin, cfa::FIXED_PROLOGUE, size as i32, RBP_UNCHANGED));
                }
                let at = (b.begin + u64::from(complete)).min(b.end - 1);
                rows.push(row(at, cfa::FIXED, size as i32, -16));
            }
            Frame::Interpreter => rows.push(row(b.begin, cfa::SENDER_SP, 0, RBP_UNCHANGED)),
            Frame::Linked => rows.push(row(b.begin, cfa::RBP, 16, -16)),
            Frame::None => rows.push(row(b.begin, cfa::RSP, 8, RBP_UNCHANGED)),
            Frame::Unknown => rows.push(row(b.begin, cfa::UNSUPPORTED, 0, RBP_UNCHANGED)),
        }
        if blobs.get(i + 1).is_none_or(|next| next.begin > b.end) {
            rows.push(row(b.end, cfa::NEW_CODE, 0, RBP_UNCHANGED));
        }
    }
    CodeRows { base, end: bounds.1, rows }
}

/// Reads `buf` from `at` in reads of at most 1 MiB; false when any fails.
fn read_chunked(m: &dyn RemoteMemory, at: u64, buf: &mut [u8]) -> bool {
    buf.chunks_mut(1 << 20).enumerate().all(|(i, chunk)| m.read(at + (i as u64) * (1 << 20), chunk).is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blob(begin: u64, end: u64, name: &str, frame: Frame) -> Blob {
        Blob { begin, end, name: name.into(), frame }
    }

    #[test]
    fn each_blob_is_walked_by_its_frame_and_gaps_are_new_code() {
        let base = 0x7f00_0000_0000;
        let blobs = [
            blob(base + 0x100, base + 0x900, "Interpreter", Frame::Interpreter),
            blob(base + 0x900, base + 0xa00, "StubRoutines (1)", Frame::Linked),
            blob(base + 0x1000, base + 0x1400, "nmethod", Frame::Fixed { size: 48, complete: 0x20 }),
            blob(base + 0x1480, base + 0x1500, "I2C/C2I adapters", Frame::Unknown),
        ];
        let code = rows((base, base + 0x10_0000), &blobs);
        let got: Vec<(u32, u8, i32, i16)> =
            code.rows.iter().map(|r| (r.pc, r.cfa_kind, r.cfa_offset, r.rbp_offset)).collect();
        assert_eq!(
            got,
            [
                (0x100, cfa::SENDER_SP, 0, RBP_UNCHANGED),
                (0x900, cfa::RBP, 16, -16),
                (0xa00, cfa::NEW_CODE, 0, RBP_UNCHANGED),
                (0x1000, cfa::FIXED_PROLOGUE, 48, RBP_UNCHANGED),
                (0x1020, cfa::FIXED, 48, -16),
                (0x1400, cfa::NEW_CODE, 0, RBP_UNCHANGED),
                (0x1480, cfa::UNSUPPORTED, 0, RBP_UNCHANGED),
                (0x1500, cfa::NEW_CODE, 0, RBP_UNCHANGED),
            ]
        );
        assert!(code.rows.windows(2).all(|w| w[0].pc < w[1].pc), "sorted, one row an address");
    }

    #[test]
    fn a_blob_names_how_its_frame_is_walked() {
        assert_eq!(Blob::frame_of("nmethod", 6, 12), Frame::Fixed { size: 48, complete: 12 });
        assert_eq!(Blob::frame_of("SafepointBlob", 4, -1), Frame::Fixed { size: 32, complete: 0 });
        assert_eq!(Blob::frame_of("Interpreter", 0, 0), Frame::Interpreter);
        assert_eq!(Blob::frame_of("StubRoutines (final stubs)", 0, 0), Frame::Linked);
        assert_eq!(Blob::frame_of("vtable chunks", 0, 0), Frame::None);
        assert_eq!(Blob::frame_of("I2C/C2I adapters", 0, 0), Frame::Unknown);
        assert_eq!(Blob::frame_of("nmethod", 1 << 20, 0), Frame::Unknown, "a frame size past belief");
    }
}
