//! A one-line progress display on stderr, shown only when stderr is a terminal.

use std::{
    io::{IsTerminal, Write},
    time::Duration,
};

pub struct Progress {
    enabled: bool,
}

impl Progress {
    pub fn new() -> Self {
        Self { enabled: std::io::stderr().is_terminal() }
    }

    pub fn update(&self, pid: u32, elapsed: Duration, total: Option<Duration>, samples: u64, off_cpu: Duration) {
        if !self.enabled {
            return;
        }
        let of = total.map(|t| format!(" / {:.0}s", t.as_secs_f64())).unwrap_or_else(|| " (Ctrl-C to stop)".into());
        eprint!(
            "\r\x1b[2Krecording pid {pid}: {:.0}s{of}, {samples} on-CPU samples, {:.1}s off-CPU",
            elapsed.as_secs_f64(),
            off_cpu.as_secs_f64()
        );
        let _ = std::io::stderr().flush();
    }

    pub fn finish(&self) {
        if self.enabled {
            eprint!("\r\x1b[2K");
            let _ = std::io::stderr().flush();
        }
    }
}

impl Default for Progress {
    fn default() -> Self {
        Self::new()
    }
}
