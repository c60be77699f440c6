//! CPython 3.11+ location tables (`co_linetable`, described in CPython's
//! `Objects/locations.md`): which source line an instruction came from.
//!
//! Each entry covers 1 to 8 code units. Its first byte has the top bit set, a 4-bit code and the
//! length minus one; the code says how the line (and columns, which we skip) follow:
//! - 15: no location; 14: long form (signed line delta, end line, column, end column as
//!   varints); 13: no columns (signed line delta);
//! - 10 to 12: one line, delta `code - 10`, then two column bytes;
//! - 0 to 9: same line, then one column byte.
//!
//! Varints are 6-bit groups, least significant first, with 0x40 marking that more follow. The
//! table comes from the target's memory: a malformed one gives no line, never a panic.

/// Entries decoded at most per lookup: a 2^16-unit code object has at most as many entries.
const MAX_ENTRIES: usize = 1 << 16;

/// The line of the instruction at code unit `index` (not bytes), starting from the code
/// object's `co_firstlineno`. None if the table does not reach it, gives it no line, or is
/// malformed.
pub fn line_of(table: &[u8], first_line: i32, index: u64) -> Option<u32> {
    let mut r = Reader { data: table, at: 0 };
    let (mut line, mut unit) = (i64::from(first_line), 0u64);
    for _ in 0..MAX_ENTRIES {
        let head = r.byte()?;
        if head & 0x80 == 0 {
            return None; // not the start of an entry
        }
        let code = (head >> 3) & 0x0f;
        let length = u64::from(head & 0x07) + 1;
        let has_line = match code {
            15 => false,
            14 => {
                line = line.checked_add(r.svarint()?)?;
                for _ in 0..3 {
                    r.varint()?;
                }
                true
            }
            13 => {
                line = line.checked_add(r.svarint()?)?;
                true
            }
            10..=12 => {
                line = line.checked_add(i64::from(code - 10))?;
                r.skip(2)?;
                true
            }
            _ => {
                r.skip(1)?;
                true
            }
        };
        if index < unit + length {
            return (has_line && line > 0).then(|| u32::try_from(line).ok()).flatten();
        }
        unit += length;
    }
    None
}

struct Reader<'a> {
    data: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn byte(&mut self) -> Option<u8> {
        let b = *self.data.get(self.at)?;
        self.at += 1;
        Some(b)
    }

    fn skip(&mut self, n: usize) -> Option<()> {
        self.at = self.at.checked_add(n).filter(|&at| at <= self.data.len())?;
        Some(())
    }

    fn varint(&mut self) -> Option<u64> {
        let (mut value, mut shift) = (0u64, 0u32);
        loop {
            let b = self.byte()?;
            value |= u64::from(b & 0x3f).checked_shl(shift)?;
            if b & 0x40 == 0 {
                return Some(value);
            }
            shift += 6;
            if shift > 60 {
                return None;
            }
        }
    }

    fn svarint(&mut self) -> Option<i64> {
        let v = self.varint()?;
        let magnitude = i64::try_from(v >> 1).ok()?;
        Some(if v & 1 == 1 { -magnitude } else { magnitude })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(code: u8, units: u8) -> u8 {
        0x80 | (code << 3) | (units - 1)
    }

    #[test]
    fn each_form_moves_the_line_as_written() {
        let table = [
            head(13, 2),
            4, // no columns: +2 (svarint 4)
            head(5, 1),
            0x12, // short form: same line
            head(11, 3),
            1,
            9,           // one-line form: +1
            head(15, 1), // no location
            head(14, 1),
            3, // long form: -1 (svarint 3)
            0,
            5,
            7,
        ];
        let lines: Vec<Option<u32>> = (0..9).map(|i| line_of(&table, 10, i)).collect();
        assert_eq!(lines, vec![Some(12), Some(12), Some(12), Some(13), Some(13), Some(13), None, Some(12), None]);
    }

    #[test]
    fn long_varints_and_negative_deltas() {
        // +100 is svarint 200 = 0b11_001000: groups 0x08 | 0x40, then 3.
        let table = [head(13, 1), 0x48, 3, head(13, 1), 201 & 0x3f | 0x40, 201 >> 6];
        assert_eq!(line_of(&table, 1, 0), Some(101));
        assert_eq!(line_of(&table, 1, 1), Some(1), "-100");
    }

    #[test]
    fn garbage_gives_no_line() {
        assert_eq!(line_of(&[], 1, 0), None);
        assert_eq!(line_of(&[0x00, 0x01], 1, 0), None, "not an entry");
        assert_eq!(line_of(&[head(14, 1), 0xff, 0xff], 1, 0), None, "varint runs off the end");
        assert_eq!(line_of(&[head(14, 1); 20], 1, 0), None, "varint never ends");
        assert_eq!(line_of(&[head(10, 1), 1], 1, 0), None, "columns missing");
        assert_eq!(line_of(&[head(13, 1), 3, head(13, 1), 3], 2, 1), None, "line below 1");
        assert_eq!(line_of(&[head(13, 1), 0], 1, u64::MAX), None);
    }
}

/// Against the interpreter itself: every code object of a few standard modules, decoded here and
/// by `code.co_positions()` (one position per code unit), with the machine's python3 (3.11+) and
/// the interpreters `cargo xtask setup` unpacked into Debian roots (3.13, 3.14), where present.
#[cfg(test)]
mod interpreter_tests {
    use super::line_of;

    const DUMP: &str = r#"
import asyncio.base_events, json.decoder, threading, types
def codes(c):
    yield c
    for k in c.co_consts:
        if isinstance(k, types.CodeType):
            yield from codes(k)
for m in (asyncio.base_events, json.decoder, threading):
    for c in codes(compile(open(m.__file__).read(), m.__file__, "exec")):
        lines = " ".join(str(p[0] or 0) for p in c.co_positions())
        print(c.co_firstlineno, c.co_linetable.hex(), lines)
"#;

    /// Each interpreter there is, named, and a command that runs it: the machine's, then each
    /// root's in its root (`chroot` needs root).
    fn interpreters() -> Vec<(String, std::process::Command)> {
        let mut all = vec![("python3".to_string(), std::process::Command::new("python3"))];
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("the Debian roots' interpreters need root for chroot: only the machine's is checked");
            return all;
        }
        let roots = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/python-roots");
        for root in std::fs::read_dir(roots).into_iter().flatten().flatten().map(|e| e.path()) {
            let Ok(exe) = std::fs::read_to_string(root.join("ready")) else { continue };
            let mut chroot = std::process::Command::new("chroot");
            chroot.arg(&root).arg(exe.trim());
            all.push((format!("{} in {}", exe.trim(), root.display()), chroot));
        }
        all
    }

    #[test]
    fn lines_match_co_positions() {
        for (python, mut command) in interpreters() {
            let out = command.args(["-c", DUMP]).output().expect("python3");
            assert!(out.status.success(), "{python}: {}", String::from_utf8_lossy(&out.stderr));
            let (codes, units) = check(&String::from_utf8(out.stdout).unwrap());
            eprintln!("{python}: {codes} code objects, {units} code units");
            assert!(codes > 200 && units > 10_000, "{python}: {codes} code objects, {units} code units");
        }
    }

    /// Checks every code unit of `DUMP`'s output: (code objects, code units).
    fn check(dump: &str) -> (usize, usize) {
        let (mut codes, mut units) = (0, 0);
        for line in dump.lines() {
            let mut fields = line.split(' ');
            let first: i32 = fields.next().unwrap().parse().unwrap();
            let hex = fields.next().unwrap();
            let table: Vec<u8> =
                (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap()).collect();
            for (index, want) in fields.enumerate() {
                let want: u32 = want.parse().unwrap();
                let got = line_of(&table, first, index as u64).unwrap_or(0);
                assert_eq!(got, want, "code unit {index} of the code object at line {first}");
                units += 1;
            }
            codes += 1;
        }
        (codes, units)
    }
}
