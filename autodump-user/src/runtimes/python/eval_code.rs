//! Where CPython's eval loop is in its file: the main body (`_PyEval_EvalFrameDefault`) and the
//! cold part GCC moves its unlikely paths to (`_PyEval_EvalFrameDefault.cold`, a fragment with an
//! FDE of its own). A C frame in either runs the thread's Python frames. A file without the
//! `.cold` symbol (Debian strips `.symtab`) still has the fragment: the body jumps into it, at
//! many places, none of them its start (a jump to another function's start is a tail call).

use std::collections::HashMap;

use iced_x86::{Decoder, DecoderOptions, Mnemonic, OpKind};
use object::{Object, ObjectSymbol};

use crate::files::{fde::FunctionStarts, segments::Segments};

pub const EVAL_FUNCTION: &str = "_PyEval_EvalFrameDefault";
const COLD: &str = "_PyEval_EvalFrameDefault.cold";
/// Jumps into one fragment it takes to call it the cold part.
const MIN_JUMPS: usize = 3;

/// The eval loop's body and, when found, its cold part: file virtual addresses, [start, end).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EvalCode {
    pub body: (u64, u64),
    pub cold: Option<(u64, u64)>,
}

pub fn find(elf: &object::File<'_>, data: &[u8]) -> Option<EvalCode> {
    let symbol = |name: &str| elf.dynamic_symbols().chain(elf.symbols()).find(|s| s.name() == Ok(name));
    let body = symbol(EVAL_FUNCTION).filter(|s| s.size() > 0).map(|s| (s.address(), s.address() + s.size()))?;
    let fdes = FunctionStarts::parse(data);
    let cold = match symbol(COLD) {
        Some(s) if s.size() > 0 => Some((s.address(), s.address() + s.size())),
        Some(s) => fdes.as_ref().and_then(|f| f.range_of(s.address())),
        None => fdes.as_ref().and_then(|f| cold_by_jumps(elf, data, body, f)),
    };
    Some(EvalCode { body, cold })
}

/// The FDE that the body's jumps out of itself land in most, away from its start.
fn cold_by_jumps(elf: &object::File<'_>, data: &[u8], body: (u64, u64), fdes: &FunctionStarts) -> Option<(u64, u64)> {
    let segments = Segments::of(elf);
    let at = usize::try_from(segments.to_offset(body.0)?).ok()?;
    let code = data.get(at..at.checked_add(usize::try_from(body.1 - body.0).ok()?)?)?;
    let mut jumps: HashMap<(u64, u64), usize> = HashMap::new();
    for instruction in Decoder::with_ip(64, code, body.0, DecoderOptions::NONE) {
        // Jumps, conditional or not; calls go to other functions.
        if instruction.op0_kind() != OpKind::NearBranch64 || instruction.mnemonic() == Mnemonic::Call {
            continue;
        }
        let target = instruction.near_branch_target();
        if (body.0..body.1).contains(&target) {
            continue;
        }
        if let Some(range) = fdes.range_of(target).filter(|r| r.0 != target) {
            *jumps.entry(range).or_default() += 1;
        }
    }
    jumps.into_iter().filter(|(_, n)| *n >= MIN_JUMPS).max_by_key(|(r, n)| (*n, r.0)).map(|(r, _)| r)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Jumps from [from.0, from.1) into [to.0, to.1) in `elf`'s code.
    fn jumps(elf: &object::File<'_>, data: &[u8], from: (u64, u64), to: (u64, u64)) -> usize {
        let at = Segments::of(elf).to_offset(from.0).unwrap() as usize;
        let code = &data[at..at + (from.1 - from.0) as usize];
        Decoder::with_ip(64, code, from.0, DecoderOptions::NONE)
            .into_iter()
            .filter(|i| i.op0_kind() == OpKind::NearBranch64 && i.mnemonic() != Mnemonic::Call)
            .filter(|i| (to.0..to.1).contains(&i.near_branch_target()))
            .count()
    }

    /// Debian's python3.11 has no `.symtab`: its cold part is found by the body's jumps, and
    /// jumps back into the body (its paths rejoin the loop), from outside it.
    #[test]
    fn debian_python_has_its_cold_part_found() {
        let Ok(data) = std::fs::read("/usr/bin/python3.11") else {
            eprintln!("skipped: no /usr/bin/python3.11");
            return;
        };
        let elf = object::File::parse(&*data).unwrap();
        let found = find(&elf, &data).unwrap();
        let cold = found.cold.expect("a cold part");
        let back = jumps(&elf, &data, cold, found.body);
        eprintln!("{found:x?}: {back} jumps back into the body");
        assert!(cold.1 <= found.body.0 || cold.0 >= found.body.1, "outside the body");
        assert!(back >= MIN_JUMPS, "the cold part rejoins the body");
    }

    /// pyenv's 3.12 keeps `.symtab`: the cold part is the one its symbol names.
    #[test]
    fn a_cold_symbol_is_taken_as_it_is() {
        let path = "/root/.pyenv/versions/3.12.1/lib/libpython3.12.so.1.0";
        let Ok(data) = std::fs::read(path) else {
            eprintln!("skipped: no {path}");
            return;
        };
        let elf = object::File::parse(&*data).unwrap();
        let cold = elf.symbols().find(|s| s.name() == Ok(COLD)).unwrap();
        let found = find(&elf, &data).unwrap();
        assert_eq!(found.cold, Some((cold.address(), cold.address() + cold.size())));
    }
}
