//! The text of an interpreter's thread dump (`python-threads.txt`, `ruby-threads.txt`), laid out
//! as `py-spy dump` prints one: a line per thread (its id, state and name), then its frames
//! innermost first, indented, then what was cut or could not be read. Each runtime says what a
//! thread's state is and how a frame reads.

use std::io::{Result, Write};

/// One thread of a dump.
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

/// Writes one thread of a dump.
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
