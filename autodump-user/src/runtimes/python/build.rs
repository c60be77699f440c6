//! What kind of CPython build a process runs, where it changes what its stacks mean: the
//! experimental JIT (3.13+) runs traces outside the eval loop, and the tail-calling interpreter
//! (3.14, `--with-tail-call-interp`) runs each instruction in a function of its own. Neither is
//! supported; the summary says which was found.

use object::{Object, ObjectSymbol};

/// The variable that turns the JIT on or off at start (`PYTHON_JIT=0|1`); its name is in the
/// interpreter only when the JIT is built in.
const JIT_VARIABLE: &[u8] = b"PYTHON_JIT\0";
/// Prefix of the tail-calling interpreter's instruction functions (in `.symtab`, when kept).
const TAIL_CALL_PREFIX: &str = "_TAIL_CALL_";
/// The most of `/proc/PID/environ` read.
const MAX_ENVIRON: u64 = 1 << 20;

/// Why this file's frames cannot be read in any process, if they cannot: the tail-calling
/// interpreter, when its symbols are kept.
pub fn unsupported_file(elf: &object::File<'_>) -> Option<String> {
    elf.symbols()
        .any(|s| s.name().is_ok_and(|n| n.starts_with(TAIL_CALL_PREFIX)))
        .then(|| "the tail-calling interpreter (--with-tail-call-interp) is not supported".into())
}

/// Whether the experimental JIT is built in (whether it is on is each process's environment).
pub fn jit_built(data: &[u8]) -> bool {
    data.windows(JIT_VARIABLE.len()).any(|w| w == JIT_VARIABLE)
}

/// Why process `pid`'s frames cannot be read, if it turned a built-in JIT on.
pub fn jit_on_in(pid: u32) -> Option<String> {
    let environ = read_environ(pid);
    jit_setting(&environ).filter(|v| jit_on(v)).map(|v| {
        format!("the experimental JIT is on (PYTHON_JIT={v}): its traces run outside the eval loop; not supported")
    })
}

fn read_environ(pid: u32) -> Vec<u8> {
    use std::io::Read;
    let mut out = Vec::new();
    if let Ok(f) = std::fs::File::open(format!("/proc/{pid}/environ")) {
        let _ = f.take(MAX_ENVIRON).read_to_end(&mut out);
    }
    out
}

/// The value of `PYTHON_JIT` in a NUL-separated environment, if set.
fn jit_setting(environ: &[u8]) -> Option<String> {
    environ
        .split(|&b| b == 0)
        .find_map(|v| v.strip_prefix(b"PYTHON_JIT="))
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

/// As CPython reads it: set and not empty, the JIT is on unless the value starts with `0`.
/// Unset, the build's default holds: off in builds like Debian's (`--enable-experimental-jit=
/// yes-off`), which cannot be told from outside from builds with it on by default.
fn jit_on(value: &str) -> bool {
    !value.is_empty() && !value.starts_with('0')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_jit_setting_is_read_as_cpython_reads_it() {
        assert_eq!(jit_setting(b"A=1\0PYTHON_JIT=1\0B=2\0").as_deref(), Some("1"));
        assert_eq!(jit_setting(b"MY_PYTHON_JIT=1\0"), None, "a longer name is another variable");
        assert_eq!(jit_setting(b""), None);
        assert!(jit_on("1") && jit_on("yes"));
        assert!(!jit_on("0") && !jit_on("") && !jit_on("0x"));
    }
}
