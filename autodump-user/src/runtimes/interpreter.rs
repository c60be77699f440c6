//! What the interpreter runtimes (CPython, CRuby) share: the facts every one's summary section
//! has, its line on the bundle's page, its threads as a dump reads them from /proc, and the
//! text of its thread dump (`python-threads.txt`, `ruby-threads.txt`), laid out as `py-spy dump`
//! prints one. Each runtime says how its threads' states and frames read.

use std::io::{Result, Write};

use serde::Serialize;

use crate::write::chart::escape;

/// The facts every interpreter's summary section has (flattened into the runtime's own).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct InterpreterStatus {
    /// From the interpreter's own version string ("3.11.2").
    pub version: String,
    /// The file it lives in: the executable or its shared library.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// False for an interpreter this agent cannot read (another version, a layout that did not
    /// check), with the reason.
    pub threads_available: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Threads in the bundle's dump, and how many of them had frames of the language.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub threads: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub threads_with_frames: Option<usize>,
    /// Whether the probes put the language's frames in the stacks, and if not, why.
    pub frames_in_stacks: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub frames_not_in_stacks: Option<String>,
}

impl InterpreterStatus {
    /// `read`: (version, file) of an interpreter that is read, or (version, why not); `threads`:
    /// (threads, with frames) of the last dump; `frames`: whether the probes emit its frames.
    pub fn new(
        read: std::result::Result<(&str, &str), (&str, &str)>,
        threads: Option<(usize, usize)>,
        frames: &std::result::Result<(), String>,
    ) -> Self {
        let (threads, threads_with_frames) = threads.unzip();
        match read {
            Ok((version, file)) => Self {
                version: version.into(),
                file: Some(file.into()),
                threads_available: true,
                reason: None,
                threads,
                threads_with_frames,
                frames_in_stacks: frames.is_ok(),
                frames_not_in_stacks: frames.clone().err(),
            },
            Err((version, why)) => Self {
                version: version.into(),
                file: None,
                threads_available: false,
                reason: Some(why.into()),
                threads,
                threads_with_frames,
                frames_in_stacks: false,
                frames_not_in_stacks: Some(why.into()),
            },
        }
    }

    /// The page's line: which interpreter (`CPython`), and where its threads' stacks of
    /// `language` (`Python`) are: the dump `file`, and the share of on-CPU samples with them.
    pub fn html(&self, interpreter: &str, language: &str, file: &str, cpu_share: Option<f64>) -> String {
        let version = escape(&self.version);
        match (&self.reason, self.threads) {
            (Some(why), _) => format!("<p>{interpreter} {version}: {language} stacks not read ({}).</p>", escape(why)),
            (None, Some(threads)) => {
                let frames = match (&self.frames_not_in_stacks, cpu_share) {
                    (Some(why), _) => format!(" Stacks have native frames only: {}.", escape(why)),
                    (None, Some(share)) => format!(" {:.0}% of on-CPU samples have {language} frames.", share * 100.0),
                    (None, None) => String::new(),
                };
                format!(
                    "<p>{interpreter} {version}: {threads} {language} threads, each with its {language} stack in \
                     <a href=\"{file}\">{file}</a>.{frames}</p>"
                )
            }
            (None, None) => format!("<p>{interpreter} {version}.</p>"),
        }
    }
}

/// A thread of a dump, with what /proc says of it.
#[derive(Debug)]
pub struct DumpedThread<T> {
    pub thread: T,
    /// The kernel thread's name (`comm`).
    pub name: String,
    /// Running or runnable when read (`R` in its /proc stat), as py-spy's "active".
    pub active: bool,
}

/// Process `pid`'s `threads` (each with its id, `tid`), with their names and states from /proc.
pub fn dumped<T>(pid: u32, threads: Vec<T>, tid: impl Fn(&T) -> u32) -> Vec<DumpedThread<T>> {
    threads
        .into_iter()
        .map(|thread| {
            let task = format!("/proc/{pid}/task/{}", tid(&thread));
            let name = std::fs::read_to_string(format!("{task}/comm")).unwrap_or_default().trim_end().to_string();
            let stat = std::fs::read_to_string(format!("{task}/stat")).unwrap_or_default();
            let active = stat.rsplit_once(") ").is_some_and(|(_, rest)| rest.starts_with('R'));
            DumpedThread { thread, name, active }
        })
        .collect()
}

/// One thread of a dump's text.
pub struct ThreadText<'a, F> {
    pub tid: u32,
    /// `active`, `idle`, or a runtime's own (`active+gil`).
    pub state: &'a str,
    /// The kernel thread's name (`comm`).
    pub name: &'a str,
    /// Each frame's text, innermost first (`label (path:line)`).
    pub frames: F,
    /// The frame limit, when frames past it were cut.
    pub cut_at: Option<usize>,
    /// Frames that could not be read.
    pub unreadable: u32,
}

/// Writes one thread of a dump: a line for the thread (its id, state and name), then its frames
/// innermost first, indented, then what was cut or could not be read.
pub fn write_thread<F: IntoIterator<Item = String>>(w: &mut dyn Write, t: ThreadText<'_, F>) -> Result<()> {
    writeln!(w, "Thread {} ({}): \"{}\"", t.tid, t.state, t.name)?;
    for frame in t.frames {
        writeln!(w, "    {frame}")?;
    }
    if let Some(limit) = t.cut_at {
        writeln!(w, "    ... (outer frames cut at {limit})")?;
    }
    if t.unreadable > 0 {
        writeln!(w, "    # {} frames could not be read", t.unreadable)?;
    }
    Ok(())
}
