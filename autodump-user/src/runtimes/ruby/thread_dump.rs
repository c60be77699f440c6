//! A Ruby program's threads as a bundle's `ruby-threads.txt` lists them: each thread's id, name,
//! whether it runs, and its Ruby stack innermost first (`label (path:line)`, as rbspy prints a
//! frame `label - path:line`); and what its summary says of its interpreter.

use std::io::Write;

use serde::Serialize;

use super::{RubyThread, MAX_FRAMES};
use crate::runtimes::interpreter::{write_thread, DumpedThread, InterpreterStatus, ThreadText};

/// Every Ruby thread at the dump.
#[derive(Debug, Default)]
pub struct RubyDump {
    pub threads: Vec<DumpedRubyThread>,
}

/// A Ruby thread of a dump, with what /proc says of it.
pub type DumpedRubyThread = DumpedThread<RubyThread>;

/// Ruby-specific facts of a bundle: absent for other programs.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RubyStatus {
    /// "3.4.11", from `ruby_version`; libruby or the executable; false for a CRuby this agent
    /// cannot read (another version, a layout that did not check).
    #[serde(flatten)]
    pub interpreter: InterpreterStatus,
    /// Share of on-CPU samples and of off-CPU time whose stacks have Ruby frames.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_share_with_ruby: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offcpu_share_with_ruby: Option<f64>,
    /// What is not read as Ruby frames in this process (YJIT's code, when it is on).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unsupported: Vec<String>,
}

pub fn write_ruby_threads(dump: &RubyDump, w: &mut dyn Write) -> std::io::Result<()> {
    for t in &dump.threads {
        let frames = t.thread.frames.iter().map(|f| match &f.path {
            Some(path) => format!("{} ({path}:{})", f.label, f.line),
            None => f.label.to_string(),
        });
        let state = if t.active { "active" } else { "idle" };
        let cut_at = t.thread.truncated.then_some(MAX_FRAMES);
        let (tid, name, unreadable) = (t.thread.tid, t.name.as_str(), t.thread.unreadable);
        write_thread(w, ThreadText { tid, state, name, frames, cut_at, unreadable })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtimes::ruby::RubyFrame;

    #[test]
    fn lists_threads_with_their_ruby_stacks() {
        let frame =
            |label: &str, path: Option<&str>, line| RubyFrame { label: label.into(), path: path.map(Into::into), line };
        let thread = |tid, frames| RubyThread { tid, frames, truncated: false, unreadable: 0 };
        let dump = RubyDump {
            threads: vec![
                DumpedRubyThread {
                    thread: thread(
                        10,
                        vec![frame("sleep [c function]", None, 0), frame("block in <main>", Some("/srv/app.rb"), 7)],
                    ),
                    name: "ruby".into(),
                    active: false,
                },
                DumpedRubyThread {
                    thread: thread(11, vec![frame("spin", Some("/srv/app.rb"), 3)]),
                    name: "worker".into(),
                    active: true,
                },
            ],
        };
        let mut text = Vec::new();
        write_ruby_threads(&dump, &mut text).unwrap();
        assert_eq!(
            String::from_utf8(text).unwrap(),
            "Thread 10 (idle): \"ruby\"\n    sleep [c function]\n    block in <main> (/srv/app.rb:7)\n\
             Thread 11 (active): \"worker\"\n    spin (/srv/app.rb:3)\n"
        );
    }
}
