//! The 3.11 and 3.12 tables against the struct layouts of those versions' own headers: a C
//! program built with the internal headers prints each `offsetof`. Debian 12's python3.11-dev
//! (which setup installs) gives 3.11's; 3.12's come from a pyenv build when one is installed.

use std::{path::Path, process::Command};

use super::offsets::{CurrentFrame, Gil, Offsets, V3_11, V3_12};

/// (name printed, C expression) for the fields both versions have.
const COMMON: &[(&str, &str)] = &[
    ("interpreters_head", "offsetof(_PyRuntimeState, interpreters.head)"),
    ("interp_next", "offsetof(PyInterpreterState, next)"),
    ("interp_threads_head", "offsetof(PyInterpreterState, threads.head)"),
    ("tstate_next", "offsetof(PyThreadState, next)"),
    ("tstate_native_thread_id", "offsetof(PyThreadState, native_thread_id)"),
    ("cframe", "offsetof(PyThreadState, cframe)"),
    ("current_frame", "offsetof(_PyCFrame, current_frame)"),
    ("frame_previous", "offsetof(_PyInterpreterFrame, previous)"),
    ("frame_code", "offsetof(_PyInterpreterFrame, f_code)"),
    ("frame_instr", "offsetof(_PyInterpreterFrame, prev_instr)"),
    ("frame_owner", "offsetof(_PyInterpreterFrame, owner)"),
    ("code_filename", "offsetof(PyCodeObject, co_filename)"),
    ("code_name", "offsetof(PyCodeObject, co_name)"),
    ("code_qualname", "offsetof(PyCodeObject, co_qualname)"),
    ("code_linetable", "offsetof(PyCodeObject, co_linetable)"),
    ("code_firstlineno", "offsetof(PyCodeObject, co_firstlineno)"),
    ("code_adaptive", "offsetof(PyCodeObject, co_code_adaptive)"),
    ("object_type", "offsetof(PyObject, ob_type)"),
    ("bytes_size", "offsetof(PyVarObject, ob_size)"),
    ("bytes_data", "offsetof(PyBytesObject, ob_sval)"),
    ("unicode_state", "offsetof(PyASCIIObject, state)"),
    ("unicode_length", "offsetof(PyASCIIObject, length)"),
    ("ascii_size", "sizeof(PyASCIIObject)"),
    ("compact_size", "sizeof(PyCompactUnicodeObject)"),
];

fn table(o: &Offsets) -> Vec<(&'static str, u64)> {
    let CurrentFrame::ThroughCFrame { cframe, current_frame } = o.current_frame else { panic!("3.11/3.12") };
    vec![
        ("interpreters_head", o.interpreters_head),
        ("interp_next", o.interp_next),
        ("interp_threads_head", o.interp_threads_head),
        ("tstate_next", o.tstate_next),
        ("tstate_native_thread_id", o.tstate_native_thread_id),
        ("cframe", cframe),
        ("current_frame", current_frame),
        ("frame_previous", o.frame_previous),
        ("frame_code", o.frame_code),
        ("frame_instr", o.frame_instr),
        ("frame_owner", o.frame_owner),
        ("code_filename", o.code_filename),
        ("code_name", o.code_name),
        ("code_qualname", o.code_qualname),
        ("code_linetable", o.code_linetable),
        ("code_firstlineno", o.code_firstlineno),
        ("code_adaptive", o.code_adaptive),
        ("object_type", o.object_type),
        ("bytes_size", o.bytes_size),
        ("bytes_data", o.bytes_data),
        ("unicode_state", o.unicode_state),
        ("unicode_length", o.unicode_length),
        ("ascii_size", o.ascii_size),
        ("compact_size", o.compact_size),
    ]
}

/// Builds and runs a program printing `name value` for each expression, with `include`.
fn offsets_from_headers(include: &Path, fields: &[(&str, String)]) -> Vec<(String, u64)> {
    let tag: String = include.to_string_lossy().chars().filter(char::is_ascii_alphanumeric).collect();
    let dir = std::env::temp_dir().join(format!("autodump-pyoffsets-{}-{tag}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let prints: String = fields.iter().map(|(n, e)| format!("  printf(\"{n} %zu\\n\", (size_t)({e}));\n")).collect();
    let source = format!(
        "#define Py_BUILD_CORE 1\n#include <Python.h>\n#include <stddef.h>\n#include <stdio.h>\n\
         #include \"internal/pycore_runtime.h\"\n#include \"internal/pycore_interp.h\"\n\
         #include \"internal/pycore_frame.h\"\nint main(void) {{\n{prints}  return 0;\n}}\n"
    );
    std::fs::write(dir.join("offsets.c"), source).unwrap();
    let built = Command::new("cc")
        .arg("-I")
        .arg(include)
        .args(["offsets.c", "-o", "offsets"])
        .current_dir(&dir)
        .output()
        .expect("cc");
    assert!(built.status.success(), "{}", String::from_utf8_lossy(&built.stderr));
    let out = Command::new(dir.join("offsets")).output().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let (n, v) = l.split_once(' ').unwrap();
            (n.to_string(), v.parse().unwrap())
        })
        .collect()
}

fn check(include: &Path, o: &Offsets, gil: &[(&str, &str)], expected_gil: &[u64]) {
    let fields: Vec<(&str, String)> = COMMON.iter().chain(gil).map(|(n, e)| (*n, e.to_string())).collect();
    let got = offsets_from_headers(include, &fields);
    let want: Vec<(String, u64)> = table(o)
        .into_iter()
        .map(|(n, v)| (n.to_string(), v))
        .chain(gil.iter().map(|(n, _)| n.to_string()).zip(expected_gil.iter().copied()))
        .collect();
    assert_eq!(got, want, "offsets from {}", include.display());
}

/// Where setup's python3.11-dev puts 3.11's headers; required on CI (AUTODUMP_REQUIRE_BPF).
#[test]
fn the_3_11_table_matches_its_headers() {
    let include = Path::new("/usr/include/python3.11");
    if !include.join("internal/pycore_frame.h").exists() {
        assert!(std::env::var_os("AUTODUMP_REQUIRE_BPF").is_none(), "python3.11-dev is not installed");
        eprintln!("skipped: no {}", include.display());
        return;
    }
    let Gil::Runtime { holder, locked } = V3_11.gil else { panic!("3.11 keeps its GIL in the runtime") };
    let gil = [
        ("gil_holder", "offsetof(_PyRuntimeState, ceval.gil.last_holder)"),
        ("gil_locked", "offsetof(_PyRuntimeState, ceval.gil.locked)"),
        ("is_entry", "offsetof(_PyInterpreterFrame, is_entry)"),
    ];
    check(include, &V3_11, &gil, &[holder, locked, V3_11.frame_is_entry.unwrap()]);
}

#[test]
fn the_3_12_table_matches_its_headers() {
    let include = Path::new("/root/.pyenv/versions/3.12.1/include/python3.12");
    if !include.join("internal/pycore_frame.h").exists() {
        eprintln!("skipped: no {}", include.display());
        return;
    }
    let Gil::Pointer { at, holder, locked } = V3_12.gil else { panic!("3.12 points at its GIL") };
    let gil = [
        ("gil_at", "offsetof(PyInterpreterState, ceval.gil)"),
        ("gil_holder", "offsetof(struct _gil_runtime_state, last_holder)"),
        ("gil_locked", "offsetof(struct _gil_runtime_state, locked)"),
        ("cstack", "FRAME_OWNED_BY_CSTACK"),
        ("generator", "FRAME_OWNED_BY_GENERATOR"),
    ];
    let owners = [super::offsets::OWNED_BY_CSTACK, super::offsets::OWNED_BY_GENERATOR].map(u64::from);
    check(include, &V3_12, &gil, &[at, holder, locked, owners[0], owners[1]]);
}
