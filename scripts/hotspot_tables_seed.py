#!/usr/bin/env python3
"""Writes fuzz/seeds/hotspot_tables/one_compiled_method: a fake libjvm's tables and a JVM's
memory, laid out as JDK 17 lays them out, in one image at 0x100000 (the fuzz target's and the
unit test's address): the exported words (the four tables' addresses and their entries' layout)
in the first 21 words, then the tables, one code heap with 64-byte segments holding one
compiled method (`Chain.leafSpin(int)` from `Chain.java`, with `Chain.middleHop(int)` inlined
over part of its code), and the strings. The unit test
`the_fuzz_seed_is_read_whole` reads it back."""
import struct
import sys

BASE = 0x10_0000
img = bytearray(0x100)
strings = []


def put(at, value, size=8):
    img[at:at + size] = struct.pack({8: "<Q", 4: "<i", 2: "<H", 1: "<B"}[size], value)


def alloc(size, align=64):
    start = (len(img) + align - 1) // align * align
    img.extend(b"\0" * (start + size - len(img)))
    return start


def table(stride, entries):
    start = alloc(stride * (len(entries) + 1), 8)
    for i, entry in enumerate(entries):
        for word, value in entry:
            at = start + i * stride + word * 8
            if isinstance(value, str):
                strings.append((at, value))
            else:
                put(at, value)
    return BASE + start


def symbol(text):
    at = alloc(6 + len(text), 8)
    put(at + 4, len(text), 2)
    img[at + 6:at + 6 + len(text)] = text.encode()
    return BASE + at


# The JVM's memory first (the tables point into it).
statics = alloc(64)
klass = alloc(64)
put(klass + 24, symbol("Chain"))
pool = alloc(72 + 8 * 5)
put(pool + 24, BASE + klass)
put(pool + 54, 3, 2)
for i, text in [(1, "leafSpin"), (2, "(I)J"), (3, "Chain.java"), (4, "middleHop")]:
    put(pool + 72 + 8 * i, symbol(text))


def method_named(name_index):
    const_method = alloc(48)
    put(const_method + 8, BASE + pool)
    put(const_method + 34, name_index, 2)
    put(const_method + 36, 2, 2)
    method = alloc(88)
    put(method + 8, BASE + const_method)
    return BASE + method


method = method_named(1)  # Chain.leafSpin(int), the compiled method
inlined = method_named(4)  # Chain.middleHop(int), inlined into it
code = alloc(1024, 1024)
put(code, 16)  # HeapBlock::_length, in segments
put(code + 8, 1, 1)  # _used
blob = code + 16
put(blob + 12, 1000, 4)  # CodeBlob::_size
put(blob + 32, BASE + blob + 400)  # CodeBlob::_code_begin
strings.append((blob + 96, "nmethod"))
put(blob + 112, method)  # CompiledMethod::_method
# Its debug information: metadata (the two Methods), scopes data, PcDescs, as offsets from it.
put(blob + 260, 600, 4)  # nmethod::_metadata_offset
put(blob + 600, method)
put(blob + 608, inlined)
put(blob + 120, BASE + blob + 616)  # CompiledMethod::_scopes_data_begin
# A pad byte (offset 0 is no scope), leafSpin's scope at 1 (no sender, metadata entry 1 (entries
# count from 1), bci 0), then middleHop's at 4 (sender 1, metadata entry 2, bci 3).
img[blob + 616:blob + 623] = bytes([0, 0, 1, 0, 1, 2, 3])
put(blob + 268, 640, 4)  # nmethod::_scopes_pcs_offset
for i, (pc, scope) in enumerate([(-1, 1), (50, 4), (300, 1)]):
    put(blob + 640 + 16 * i, pc, 4)
    put(blob + 644 + 16 * i, scope, 4)
put(blob + 272, 688, 4)  # nmethod::_dependencies_offset
segmap = alloc(16)
img[segmap:segmap + 16] = bytes(range(16))
heap = alloc(264)
put(heap + 8 + 16, BASE + code)
put(heap + 8 + 24, BASE + code + 1024)
put(heap + 120 + 16, BASE + segmap)
put(heap + 256, 6, 4)
heap_list = alloc(8)
put(heap_list, BASE + heap)
heaps = alloc(16)
put(heaps, 1, 4)  # GrowableArrayBase::_len
put(heaps + 8, BASE + heap_list)  # GrowableArray<int>::_data
put(statics, BASE + heaps)  # CodeCache::_heaps
put(statics + 8, BASE + code)  # CodeCache::_low_bound
put(statics + 16, BASE + code + 1024)  # CodeCache::_high_bound
strings.append((statics + 24, "17.0.15+6-seed"))  # Abstract_VM_Version::_s_vm_release

# Structs: typeName, fieldName, typeString, isStatic, offset, address; 48 bytes.
for i, v in enumerate([0, 8, 16, 24, 32, 40, 48]):
    put(8 * (i + 1), v)
fields = [
    ("CodeCache", "_heaps", None, statics), ("CodeCache", "_low_bound", None, statics + 8),
    ("CodeCache", "_high_bound", None, statics + 16),
    ("Abstract_VM_Version", "_s_vm_release", None, statics + 24),
    ("GrowableArrayBase", "_len", 0, None), ("GrowableArray<int>", "_data", 8, None),
    ("CodeHeap", "_memory", 8, None), ("CodeHeap", "_segmap", 120, None),
    ("CodeHeap", "_log2_segment_size", 256, None),
    ("VirtualSpace", "_low", 16, None), ("VirtualSpace", "_high", 24, None),
    ("HeapBlock", "_header", 0, None), ("HeapBlock::Header", "_used", 8, None),
    ("CodeBlob", "_name", 96, None), ("CodeBlob", "_size", 12, None), ("CodeBlob", "_frame_size", 28, None),
    ("CompiledMethod", "_method", 112, None), ("Method", "_constMethod", 8, None),
    ("ConstMethod", "_constants", 8, None), ("ConstMethod", "_name_index", 34, None),
    ("ConstMethod", "_signature_index", 36, None), ("ConstantPool", "_pool_holder", 24, None),
    ("ConstantPool", "_source_file_name_index", 54, None), ("Klass", "_name", 24, None),
    ("Symbol", "_length", 4, None), ("Symbol", "_body", 6, None),
    ("CodeBlob", "_code_begin", 32, None), ("CompiledMethod", "_scopes_data_begin", 120, None),
    ("nmethod", "_metadata_offset", 260, None), ("nmethod", "_scopes_pcs_offset", 268, None),
    ("nmethod", "_dependencies_offset", 272, None),
    ("PcDesc", "_pc_offset", 0, None), ("PcDesc", "_scope_decode_offset", 4, None),
]
entries = []
for ty, name, offset, static in fields:
    entry = [(0, ty), (1, name)]
    entry += [(3, 1), (5, BASE + static)] if static is not None else [(4, offset)]
    entries.append(entry)
put(0, table(48, entries))
# Types: typeName, superclassName, isOop, isInteger, isUnsigned, size; 48 bytes.
for i, v in enumerate([0, 8, 32, 48]):
    put(8 * (9 + i), v)
types = [("HeapBlock", None, 16), ("ConstantPool", "Metadata", 72), ("Method", "Metadata", 88),
         ("ConstMethod", "MetaspaceObj", 48), ("nmethod", "CompiledMethod", 400),
         ("CompiledMethod", "CodeBlob", 200), ("CodeBlob", None, 104), ("PcDesc", None, 16)]
put(64, table(48, [[(0, t)] + ([(1, s)] if s else []) + [(4, n)] for t, s, n in types]))
# Constants: name, value; 16 bytes.
for i, v in enumerate([0, 8, 16]):
    put(8 * (14 + i), v)
    put(8 * (18 + i), v)
put(8 * 13, table(16, [[(0, "frame::interpreter_frame_method_offset"), (1, (1 << 64) - 3)]]))
put(8 * 17, table(16, [[(0, "markWord::hash_mask"), (1, 0x7FFFFFFF)]]))

for at, text in strings:
    put(at, BASE + len(img))
    img.extend(text.encode() + b"\0")
img.extend(b"\0" * (-len(img) % 4096))
open(sys.argv[1] if len(sys.argv) > 1 else "fuzz/seeds/hotspot_tables/one_compiled_method", "wb").write(img)
