//! What a CPython file says, read once per file (`files::shared`) and shared by every process that
//! maps it: a service of 300 workers reads its interpreter once, not 300 times. The version,
//! the build, and where the runtime state, the code type and the eval loop are, as file
//! addresses; each process adds its own load bias and reads its own memory.

use object::{Object, ObjectSection, ObjectSymbol};

use super::{build, eval_code, PyError};
use crate::files::{segments::Segments, shared::PerFile};

/// One file mapped by a process under a CPython-like name.
pub enum PyFile {
    /// Not CPython: another ELF file named like it.
    NotPython,
    /// CPython before 3.11: no `Py_Version`.
    Before311,
    Interpreter(Interpreter),
}

/// A CPython 3.11+ interpreter file (the executable or libpython).
pub struct Interpreter {
    /// PY_VERSION_HEX, from `Py_Version`.
    pub hex: u64,
    /// Why no process's frames can be read from this build, if none can.
    pub unsupported: Option<String>,
    /// The experimental JIT is built in: each process's environment says whether it is on.
    pub jit_built: bool,
    /// `_PyRuntime` (or the `.PyRuntime` section), a file address.
    pub runtime: Result<u64, String>,
    /// `PyCode_Type`, a file address.
    pub code_type: Result<u64, String>,
    /// The eval loop, file addresses; None when the file does not say.
    pub eval: Option<eval_code::EvalCode>,
    pub segments: Segments,
}

impl Interpreter {
    /// "3.11.2".
    pub fn version(&self) -> String {
        let hex = self.hex;
        format!("{}.{}.{}", hex >> 24, (hex >> 16) & 0xff, (hex >> 8) & 0xff)
    }
}

impl PyFile {
    /// Reads the ELF file `data`; `shown` is its path as the process maps it (for messages).
    pub fn parse(elf: &object::File<'_>, data: &[u8], shown: &str) -> Self {
        let segments = Segments::of(elf);
        let Some(hex) = py_version(elf, &segments, data) else {
            return match elf.dynamic_symbols().any(|s| s.name() == Ok("Py_Initialize")) {
                true => Self::Before311,
                false => Self::NotPython,
            };
        };
        let symbol = |name: &'static str| {
            elf.dynamic_symbols()
                .chain(elf.symbols())
                .find(|s| s.name() == Ok(name))
                .map(|s| s.address())
                .ok_or_else(|| PyError::NoSymbol(shown.to_string(), name).to_string())
        };
        let runtime = symbol("_PyRuntime").or_else(|e| elf.section_by_name(".PyRuntime").map(|s| s.address()).ok_or(e));
        Self::Interpreter(Interpreter {
            hex,
            unsupported: build::unsupported_file(elf),
            jit_built: build::jit_built(data),
            runtime,
            code_type: symbol("PyCode_Type"),
            eval: eval_code::find(elf, data),
            segments,
        })
    }
}

/// `Py_Version` (PY_VERSION_HEX, 3.11+), read from the file: a constant in read-only data.
fn py_version(elf: &object::File<'_>, segments: &Segments, data: &[u8]) -> Option<u64> {
    let sym = elf.dynamic_symbols().chain(elf.symbols()).find(|s| s.name() == Ok("Py_Version"))?;
    let at = usize::try_from(segments.to_offset(sym.address())?).ok()?;
    Some(u64::from(u32::from_le_bytes(data.get(at..at + 4)?.try_into().ok()?)))
}

/// The interpreter files read so far, for every watched process.
pub type PyFiles = PerFile<PyFile>;

#[cfg(test)]
mod tests {
    use std::{path::Path, sync::Arc};

    use super::*;

    /// The machine's own interpreter, reached by two paths (as two processes, one in another
    /// root, would reach it): read once.
    #[test]
    fn an_interpreter_is_read_once_for_every_path_to_it() {
        let Ok(exe) = std::fs::canonicalize("/usr/bin/python3") else {
            eprintln!("no /usr/bin/python3 on this machine: nothing to read");
            return;
        };
        let mut files = PyFiles::default();
        let read = |elf: &object::File<'_>, data: &[u8]| PyFile::parse(elf, data, "python3");
        let first = files.get(&exe, read).expect("an ELF file");
        let PyFile::Interpreter(interpreter) = &*first else { panic!("{exe:?} is not read as CPython") };
        assert!(interpreter.hex >> 24 == 3 && interpreter.runtime.is_ok() && interpreter.eval.is_some());
        let again = files.get(&Path::new("/proc/self/root").join(exe.strip_prefix("/").unwrap()), read);
        assert!(Arc::ptr_eq(&first, &again.expect("the same file")));
        assert_eq!(files.reads, 1);
    }
}
