//! The stripped-binary paths checked against the unstripped ones, for every Go the tests can
//! get: globals found in the runtime's instructions equal the symbol table's, and the layout
//! table equals the binary's DWARF.

use object::{Object, ObjectSection, ObjectSymbol};

use super::binary::GoBinary;
use super::{globals, layout::Layout, versions};
use crate::test_go;

#[test]
fn globals_found_in_instructions_match_the_symbol_table() {
    let builds = test_go::toolchains().into_iter().flat_map(|g| [(g.clone(), &[][..]), (g, &["-buildmode=pie"][..])]);
    for (goroot, extra) in builds {
        let Some((full, _)) = test_go::build_with("goleak", goroot.as_deref(), extra) else { continue };
        let data = std::fs::read(&full).unwrap();
        let elf = object::File::parse(&*data).unwrap();
        let symbol =
            |name: &str| elf.symbols().find(|s| s.name() == Ok(name)).map(|s| (s.address(), s.size())).unwrap();
        let found = globals::find(&GoBinary::open(&full).unwrap()).unwrap();
        let lock = Layout::parse(&elf).unwrap().offset("runtime.schedt", &["lock"]).unwrap();
        let expected = globals::Globals {
            allglen: symbol("runtime.allglen").0,
            allgs: symbol("runtime.allgs").0,
            allp: symbol("runtime.allp").0,
            sched_lock: symbol("runtime.sched").0 + lock,
            wait_reasons: symbol("runtime.waitReasonStrings").0,
            wait_reasons_len: symbol("runtime.waitReasonStrings").1 / 16,
        };
        assert_eq!(found, expected, "{goroot:?} {extra:?}");
    }
}

#[test]
fn layouts_match_dwarf() {
    for goroot in test_go::toolchains() {
        let Some((full, _)) = test_go::build("goleak", goroot.as_deref()) else { continue };
        let data = std::fs::read(&full).unwrap();
        let elf = object::File::parse(&*data).unwrap();
        let info = elf.section_by_name(".go.buildinfo").unwrap();
        let version = versions::go_version(info.data().unwrap()).expect("a version in the build info");
        let layout = Layout::parse(&elf).unwrap();
        let dwarf = layout.offsets().unwrap();
        let lock = layout.offset("runtime.schedt", &["lock"]).unwrap();
        let entry = versions::entry(version);
        let table = entry.map(|e| ((e.offsets)(), e.sched_lock));
        assert!(
            entry.is_some_and(|e| e.since == version)
                && table.as_ref().is_some_and(|(o, l)| format!("{o:?}") == format!("{dwarf:?}") && *l == lock),
            "Go {version:?}: the table has {table:?}, DWARF says {dwarf:?} with schedt.lock at {lock}"
        );
    }
}

#[test]
fn heap_globals_found_in_instructions_match_the_symbol_table() {
    for goroot in test_go::toolchains() {
        for fixture in ["gopublisher", "gopublisher_plain"] {
            let Some((full, _)) = test_go::build(fixture, goroot.as_deref()) else { continue };
            let data = std::fs::read(&full).unwrap();
            let elf = object::File::parse(&*data).unwrap();
            let symbol = |name: &str| elf.symbols().find(|s| s.name() == Ok(name)).map(|s| s.address());
            let found = globals::find_heap(&GoBinary::open(&full).unwrap()).unwrap();
            let expected = globals::HeapGlobals {
                mbuckets: symbol("runtime.mbuckets").unwrap(),
                mem_profile_rate: symbol("runtime.MemProfileRate").unwrap(),
                disable_memory_profiling: symbol("runtime.disableMemoryProfiling"),
                mprof_cycle: symbol("runtime.mProfCycle").filter(|_| fixture == "gopublisher"),
            };
            let found =
                globals::HeapGlobals { mprof_cycle: found.mprof_cycle.filter(|_| fixture == "gopublisher"), ..found };
            assert_eq!(found, expected, "{goroot:?} {fixture}");
        }
    }
}

#[test]
fn heap_record_width_from_the_version_matches_dwarf() {
    for goroot in test_go::toolchains() {
        let Some((full, _)) = test_go::build("gopublisher", goroot.as_deref()) else { continue };
        let data = std::fs::read(&full).unwrap();
        let elf = object::File::parse(&*data).unwrap();
        let layout = Layout::parse(&elf).unwrap();
        let (from_dwarf, from_version) =
            (versions::heap_cycle_words(&elf, Some(&layout)), versions::heap_cycle_words(&elf, None));
        assert_eq!(from_version, from_dwarf, "{goroot:?}");
        assert!([2, 4].contains(&from_dwarf));
    }
}
