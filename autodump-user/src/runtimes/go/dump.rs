//! `goroutines.txt`: every goroutine with its state, how long it has waited and its stack, as
//! Go's own `/debug/pprof/goroutine?debug=2` (and a crash's traceback) writes them, so that the
//! tools that read those read it too.

use std::{io::Write, sync::Arc};

use crate::symbolize::Location;

/// Goroutines listed one by one at most; the rest are counted (they are all in
/// `goroutines.folded`, grouped).
pub const MAX_LISTED: usize = 10_000;

#[derive(Debug, Default)]
pub struct GoroutineDump {
    pub goroutines: Vec<DumpedGoroutine>,
    /// Goroutines not listed (over `MAX_LISTED`, or not read: see the snapshot report).
    pub left_out: usize,
}

#[derive(Debug)]
pub struct DumpedGoroutine {
    pub goid: u64,
    pub state: Arc<str>,
    /// Seconds it has waited in this state, when it waits and that is known.
    pub waiting_s: Option<f64>,
    /// Innermost first.
    pub stack: Vec<Arc<Location>>,
}

/// Writes `dump` to `w`, goroutine by goroutine.
pub fn write_goroutines_txt(dump: &GoroutineDump, w: &mut dyn Write) -> std::io::Result<()> {
    for g in &dump.goroutines {
        // As Go: whole minutes, and only from one minute on.
        let minutes = g.waiting_s.map_or(0, |s| (s / 60.0) as u64);
        let waited = if minutes >= 1 { format!(", {minutes} minutes") } else { String::new() };
        writeln!(w, "goroutine {} [{}{waited}]:", g.goid, g.state)?;
        for loc in &g.stack {
            for frame in loc.frames.iter() {
                writeln!(w, "{}(...)", frame.function)?;
                match (&frame.file, frame.line) {
                    (Some(file), Some(line)) => writeln!(w, "\t{file}:{line}")?,
                    (Some(file), None) => writeln!(w, "\t{file}")?,
                    _ => writeln!(w, "\t?:0 pc={:#x}", loc.address)?,
                }
            }
        }
        writeln!(w)?;
    }
    if dump.left_out > 0 {
        writeln!(w, "# {} more goroutines not listed: see goroutines.folded for all of them", dump.left_out)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::profile::tests::loc;

    #[test]
    fn lists_goroutines_as_go_does() {
        let (park, waiter) = (loc(0x10, "runtime.gopark", false), loc(0x20, "main.waitChan", false));
        let dump = GoroutineDump {
            goroutines: vec![
                DumpedGoroutine {
                    goid: 7,
                    state: "chan receive".into(),
                    waiting_s: Some(312.0),
                    stack: vec![park.clone(), waiter.clone()],
                },
                DumpedGoroutine { goid: 9, state: "sync.Mutex.Lock".into(), waiting_s: Some(59.9), stack: vec![park] },
                DumpedGoroutine { goid: 12, state: "running".into(), waiting_s: None, stack: Vec::new() },
            ],
            left_out: 3,
        };
        let mut text = Vec::new();
        write_goroutines_txt(&dump, &mut text).unwrap();
        let text = String::from_utf8(text).unwrap();
        assert!(
            text.starts_with(
                "goroutine 7 [chan receive, 5 minutes]:\nruntime.gopark(...)\n\t?:0 pc=0x10\nmain.waitChan(...)\n"
            ),
            "{text}"
        );
        assert!(text.contains("\n\ngoroutine 9 [sync.Mutex.Lock]:\n"), "under a minute, as Go: {text}");
        assert!(text.contains("\n\ngoroutine 12 [running]:\n\n# 3 more goroutines not listed"), "{text}");
    }
}
