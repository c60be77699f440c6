use super::*;
use crate::collect::remote::ImageMemory;
use crate::runtimes::hotspot::tables::c_string;

const BASE: u64 = 0x40_0000;

/// A fake libjvm's data: the exported words at the start, then the tables, then the strings,
/// laid out as HotSpot lays them out (structs: six words; types: name, superclass, and size at
/// word 5; constants: name, value).
struct Image {
    bytes: Vec<u8>,
    strings: Vec<(usize, String)>,
}

impl Image {
    fn new() -> Self {
        Self { bytes: vec![0; 0x100], strings: Vec::new() }
    }

    fn put(&mut self, at: usize, value: u64) {
        self.bytes[at..at + 8].copy_from_slice(&value.to_le_bytes());
    }

    /// Where `text` will be (strings go after everything else).
    fn string(&mut self, slot: usize, text: &str) {
        self.strings.push((slot, text.to_string()));
    }

    /// A table at the end of the image, of `entries` (each a list of (word index, value or
    /// string)), `stride` bytes each, ended by a zero entry. Returns its address.
    fn table(&mut self, stride: usize, entries: &[Vec<(usize, Word)>]) -> u64 {
        let start = self.bytes.len();
        self.bytes.resize(start + stride * (entries.len() + 1), 0);
        for (i, entry) in entries.iter().enumerate() {
            for (word, value) in entry {
                let at = start + i * stride + word * 8;
                match value {
                    Word::Value(v) => self.put(at, *v),
                    Word::Text(t) => self.string(at, t),
                }
            }
        }
        BASE + start as u64
    }

    fn finish(mut self) -> ImageMemory {
        for (slot, text) in std::mem::take(&mut self.strings) {
            let at = BASE + self.bytes.len() as u64;
            self.bytes.extend_from_slice(text.as_bytes());
            self.bytes.push(0);
            self.put(slot, at);
        }
        // A mapping ends on a page boundary.
        self.bytes.resize(self.bytes.len().next_multiple_of(4096), 0);
        ImageMemory { base: BASE, bytes: self.bytes }
    }
}

enum Word {
    Value(u64),
    Text(&'static str),
}
use Word::{Text, Value};

/// The exports: word i of the image's first 0x100 bytes is symbol i, in the order of the
/// four lists; the layout words hold HotSpot's offsets.
fn exports() -> Exports {
    let at = |i: u64| BASE + 8 * i;
    Exports {
        structs: [at(0), at(1), at(2), at(3), at(4), at(5), at(6), at(7)],
        types: [at(8), at(9), at(10), at(11), at(12)],
        ints: [at(13), at(14), at(15), at(16)],
        longs: [at(17), at(18), at(19), at(20)],
    }
}

fn jvm(structs: &[Vec<(usize, Word)>]) -> ImageMemory {
    let mut image = Image::new();
    // Structs: typeName, fieldName, typeString, isStatic (int32), offset, address; 48 bytes.
    for (i, v) in [0u64, 8, 16, 24, 32, 40, 48].into_iter().enumerate() {
        image.put(8 * (i + 1), v);
    }
    let table = image.table(48, structs);
    image.put(0, table);
    // Types: typeName, superclassName, isOop, isInteger, isUnsigned (int32s), size; 48 bytes.
    for (i, v) in [0u64, 8, 32, 48].into_iter().enumerate() {
        image.put(8 * (9 + i), v);
    }
    let types = image.table(
        48,
        &[vec![(0, Text("Method")), (1, Text("Metadata")), (4, Value(88))], vec![(0, Text("Metadata")), (4, Value(8))]],
    );
    image.put(64, types);
    // Constants: name, value (an int32 with garbage above it, as padding may hold); 16 bytes.
    for (i, v) in [0u64, 8, 16].into_iter().enumerate() {
        image.put(8 * (14 + i), v);
        image.put(8 * (18 + i), v);
    }
    let ints =
        image.table(16, &[vec![(0, Text("frame::interpreter_frame_method_offset")), (1, Value(0xdead_ffff_fffd))]]);
    image.put(8 * 13, ints);
    let longs = image.table(16, &[vec![(0, Text("markWord::hash_mask")), (1, Value(0x7fff_ffff))]]);
    image.put(8 * 17, longs);
    image.finish()
}

fn method_fields() -> Vec<Vec<(usize, Word)>> {
    vec![
        vec![(0, Text("Method")), (1, Text("_constMethod")), (2, Text("ConstMethod*")), (4, Value(8))],
        vec![(0, Text("CodeCache")), (1, Text("_heaps")), (3, Value(1)), (4, Value(99)), (5, Value(0x7000))],
    ]
}

#[test]
fn fields_types_and_constants_are_read_as_the_tables_lay_them_out() {
    let m = jvm(&method_fields());
    let vm = VmStructs::read(&m, &exports()).expect("tables");
    assert_eq!(vm.offset("Method", "_constMethod"), Some(8));
    assert_eq!(vm.address("CodeCache", "_heaps"), Some(0x7000), "a static's address, not its offset");
    assert_eq!(vm.offset("CodeCache", "_heaps"), None);
    assert_eq!(vm.size("Method"), Some(88));
    assert_eq!(vm.types["Method"].superclass.as_deref(), Some("Metadata"));
    assert_eq!(vm.types["Metadata"].superclass, None);
    assert_eq!(vm.constant("frame::interpreter_frame_method_offset"), Some(-3), "an int32, sign-extended");
    assert_eq!(vm.constant("markWord::hash_mask"), Some(0x7fff_ffff));
    assert_eq!((vm.fields.len(), vm.unreadable, vm.truncated), (2, 0, false));
}

#[test]
fn an_unreadable_name_is_counted_and_the_table_read_on() {
    let mut fields = method_fields();
    fields.insert(0, vec![(0, Text("Method")), (1, Value(0xdead_0000)), (4, Value(16))]);
    let vm = VmStructs::read(&jvm(&fields), &exports()).expect("tables");
    assert_eq!((vm.fields.len(), vm.unreadable), (2, 1));
}

#[test]
fn a_layout_that_is_not_hotspots_is_refused() {
    let mut m = jvm(&method_fields());
    // The structs' stride word says 4 bytes.
    m.bytes[56..64].copy_from_slice(&4u64.to_le_bytes());
    let err = VmStructs::read(&m, &exports()).unwrap_err();
    assert!(matches!(err, TablesError::Layout { what: "gHotSpotVMStructs", stride: 4, .. }), "{err}");
}

#[test]
fn a_table_without_its_end_stops_at_the_cap() {
    let fields: Vec<_> =
        (0..MAX_ENTRIES + 10).map(|i| vec![(0, Text("T")), (1, Text("_f")), (4, Value(i as u64))]).collect();
    let vm = VmStructs::read(&jvm(&fields), &exports()).expect("tables");
    assert!(vm.truncated);
}

/// Two mappings.
struct Split(ImageMemory, ImageMemory);

impl RemoteMemory for Split {
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), crate::collect::remote::ReadError> {
        self.0.read(addr, buf).or_else(|_| self.1.read(addr, buf))
    }
}

#[test]
fn a_table_that_ends_with_its_mapping_is_read_to_the_end() {
    // 70 fields alone in a mapping that ends with the end mark: the second batch of 64 entries
    // runs past it, and is read one entry at a time.
    const ELSEWHERE: u64 = 0x90_0000;
    let mut main = jvm(&method_fields());
    let name = BASE + main.bytes.len() as u64;
    main.bytes.extend_from_slice(b"T\0_f\0");
    main.bytes.resize(main.bytes.len().next_multiple_of(4096), 0);
    main.bytes[..8].copy_from_slice(&ELSEWHERE.to_le_bytes());
    let mut table = vec![0u8; 48 * 71];
    for i in 0..70 {
        for (word, value) in [(0, name), (1, name + 2), (4, i as u64)] {
            table[i * 48 + word * 8..][..8].copy_from_slice(&value.to_le_bytes());
        }
    }
    let m = Split(main, ImageMemory { base: ELSEWHERE, bytes: table });
    let vm = VmStructs::read(&m, &exports()).expect("tables");
    assert_eq!(vm.offset("T", "_f"), Some(69), "the last entry wins, after every one was read");
    assert!(!vm.truncated);
}

#[test]
fn a_name_is_read_across_pieces_and_capped() {
    let mut bytes = vec![b'a'; 100];
    bytes.push(0);
    bytes.extend(vec![b'b'; 400]);
    let m = ImageMemory { base: BASE, bytes };
    assert_eq!(c_string(&m, BASE + 3).map(|s| s.len()), Some(97));
    assert_eq!(c_string(&m, BASE + 101), None, "no end within the cap (or the image)");
}

#[test]
fn a_field_is_found_in_the_superclass_that_declares_it() {
    let mut fields = method_fields();
    fields.push(vec![(0, Text("Metadata")), (1, Text("_vtable")), (4, Value(0))]);
    let vm = VmStructs::read(&jvm(&fields), &exports()).expect("tables");
    assert_eq!(vm.inherited("Method", "_vtable"), Some(("Metadata", Field::Offset(0))));
    assert_eq!(vm.inherited("Method", "_constMethod"), Some(("Method", Field::Offset(8))));
    assert_eq!(vm.inherited("Method", "_nothing"), None);
    assert_eq!(vm.statics(), 1);
}

/// The fuzz target's seed (`scripts/hotspot_tables_seed.py`) is a whole JVM: tables laid out
/// as `exports()` says, at 0x10_0000, and one compiled method in one code heap.
#[test]
fn the_fuzz_seed_is_read_whole() {
    use super::super::{
        code::{Code, CodeLayout, JavaCode, MethodFrame},
        layout::{vm_release, CodeCache, Needed},
        scopes::ScopesLayout,
    };
    let bytes = include_bytes!("../../../../fuzz/seeds/hotspot_tables/one_compiled_method").to_vec();
    let at = |i: u64| 0x10_0000 + 8 * i;
    let exports = Exports {
        structs: [at(0), at(1), at(2), at(3), at(4), at(5), at(6), at(7)],
        types: [at(8), at(9), at(10), at(11), at(12)],
        ints: [at(13), at(14), at(15), at(16)],
        longs: [at(17), at(18), at(19), at(20)],
    };
    let m = ImageMemory { base: 0x10_0000, bytes: bytes.clone() };
    let vm = VmStructs::read(&m, &exports).expect("the seed's tables");
    assert_eq!(vm.inherited("nmethod", "_method"), Some(("CompiledMethod", Field::Offset(112))));
    assert_eq!(vm.constant("frame::interpreter_frame_method_offset"), Some(-3));
    assert_eq!(vm_release(&m, &vm).as_deref(), Some("17.0.15+6-seed"));
    assert_eq!(Needed::check(&vm).missing, Vec::<String>::new());
    let cache = CodeCache::read(&m, &vm).expect("the code cache's bounds");
    let layout = CodeLayout::of(&vm).expect("what naming reads");
    let scopes = ScopesLayout::of(&vm, Some(17));
    assert!(scopes.is_some(), "JDK 17's nmethod layout");
    let mut code =
        JavaCode::new(Box::new(ImageMemory { base: 0x10_0000, bytes }), layout, scopes, (cache.low, cache.high));
    // No line tables here (`with_lines` is not called): lines are read in the JVM tests.
    let frame = |name: &str| MethodFrame { name: name.into(), file: Some("Chain.java".into()), line: None };
    let (leaf, inlined) = (frame("Chain.leafSpin(int)"), frame("Chain.middleHop(int)"));
    // The blob starts past the block's header; its code at 400 into it, the PcDescs at 50 (the
    // inlined scope) and 300 (the method's own).
    let code_begin = cache.low + 16 + 400;
    for (pc, frames) in [
        (cache.low + 16, vec![leaf.clone()]),
        (code_begin + 10, vec![inlined.clone(), leaf.clone()]),
        (code_begin + 50, vec![inlined, leaf.clone()]),
        (code_begin + 51, vec![leaf.clone()]),
        (code_begin + 400, vec![leaf.clone()]),
        (cache.high - 9, vec![leaf]),
    ] {
        assert_eq!(code.at(pc), Some(Code::Method(frames)), "{pc:#x}");
    }
    assert_eq!(code.at(cache.low), None, "the block's header is no code");
    assert_eq!(code.at(cache.high), None, "past the code cache");
    assert_eq!((code.stats.methods, code.stats.inlined, code.stats.free, code.stats.unreadable), (6, 2, 1, 0));
}

#[test]
fn a_files_tables_serve_another_process_at_another_address() {
    let vm = VmStructs::read(&jvm(&method_fields()), &exports()).expect("tables");
    let file = vm.rebased(0x1000, false);
    assert_eq!(file.address("CodeCache", "_heaps"), Some(0x6000), "relative to the load address");
    let other = file.rebased(0x7f00_0000_0000, true);
    assert_eq!(other.address("CodeCache", "_heaps"), Some(0x7f00_0000_6000));
    assert_eq!(other.offset("Method", "_constMethod"), Some(8), "offsets do not move");
    assert_eq!(other.types, vm.types);
}
