//! The HotSpot tables reader over garbage memory: the exported words (the tables' addresses and
//! their entries' layout), the entries and their names are whatever the fuzzer writes; then
//! naming compiled code through those tables (code heaps, segment maps, blobs, methods and
//! their symbols, descriptors, line number tables) and the code cache's unwind rows over the
//! same garbage. It must neither panic nor run away: every
//! table, name and walk is capped.
#![no_main]

use autodump::{
    collect::remote::ImageMemory,
    runtimes::hotspot::{
        blobs::{BlobLayout, CodeMap},
        code::{CodeLayout, JavaCode},
        lines::{decode, LineLayout},
        layout::{vm_release, CodeCache, Needed},
        scopes::ScopesLayout,
        signature::parameters,
        vmstructs::{Exports, VmStructs, MAX_ENTRIES},
    },
};
use libfuzzer_sys::fuzz_target;

/// Where the image sits in the fake address space; its first 21 words are the exported symbols,
/// in the order of `vmstructs::STRUCTS`, `TYPES`, `INTS` and `LONGS`.
const BASE: u64 = 0x10_0000;

fuzz_target!(|data: &[u8]| {
    let word = |i: u64| BASE + 8 * i;
    let exports = Exports {
        structs: [word(0), word(1), word(2), word(3), word(4), word(5), word(6), word(7)],
        types: [word(8), word(9), word(10), word(11), word(12)],
        ints: [word(13), word(14), word(15), word(16)],
        longs: [word(17), word(18), word(19), word(20)],
    };
    let _ = parameters(&String::from_utf8_lossy(data));
    let _ = decode(data, 1);
    let m = ImageMemory { base: BASE, bytes: data.to_vec() };
    let Ok(vm) = VmStructs::read(&m, &exports) else { return };
    assert!(vm.fields.len() <= MAX_ENTRIES && vm.types.len() <= MAX_ENTRIES);
    let _ = Needed::check(&vm);
    let _ = vm.inherited("nmethod", "_method");
    let _ = vm_release(&m, &vm);
    let _ = CodeCache::read(&m, &vm);
    let Ok(layout) = CodeLayout::of(&vm) else { return };
    // The whole image as the code cache: every word-aligned address in it is named.
    let end = BASE + data.len() as u64;
    let scopes = ScopesLayout::of(&vm, Some(21));
    let image = || Box::new(ImageMemory { base: BASE, bytes: data.to_vec() });
    if let Ok(blobs) = BlobLayout::of(&vm) {
        // The code cache's blobs and their rows, from the same garbage.
        let mut map = CodeMap::new(image(), layout.clone(), blobs, (BASE, end));
        if let Some(blobs) = map.changed() {
            let _ = map.rows(&blobs);
        }
    }
    let mut code = JavaCode::new(image(), layout, scopes, (BASE, end)).with_lines(LineLayout::of(&vm, Some(21)));
    for pc in (BASE..end).step_by(64) {
        let _ = code.at(pc);
        let _ = code.line(pc, (pc & 0xffff) as u32);
    }
});
