//! A JVM's Java threads read from outside, laid out as `jcmd PID Thread.print` lays them out:
//! the JVM's thread list (`ThreadsSMRSupport::_java_thread_list`), each thread's OS id and
//! state, and its Java frames from the frame it last left Java at (its `JavaFrameAnchor`):
//! compiled frames by their blob's frame size (and what they inlined there), interpreted ones by
//! their frame pointer, down to the call stub that entered Java. The JVM runs while it is read:
//! every walk is capped, and a frame the walk cannot step through ends that thread's frames.

use super::{
    blobs::{Blob, Frame},
    code::{Code, JavaCode},
    objects::Objects,
    vmstructs::VmStructs,
};
use crate::collect::remote::RemoteMemory;

/// Threads and frames a dump reads at most.
const MAX_THREADS: u64 = 4096;
const MAX_FRAMES: usize = 1024;
/// Reads again of a thread found running Java code, of all of them in one dump, and the pause
/// before each.
const THREAD_RETRIES: u32 = 5;
const RETRIES: u32 = 40;
const RETRY_PAUSE: std::time::Duration = std::time::Duration::from_millis(1);
/// Slots of an x86_64 interpreter frame, in bytes from its frame pointer.
const FRAME_SENDER_SP: u64 = 8;

/// Where a thread's list entry, id, state and last Java frame are.
#[derive(Clone, Debug)]
pub struct ThreadLayout {
    list: u64,
    length: u64,
    threads: u64,
    osthread: u64,
    thread_id: u64,
    state: u64,
    last_sp: u64,
    last_pc: u64,
    last_fp: u64,
    /// Where each thread's Java name and `Thread.State` are, when the JVM's file says.
    objects: Option<Objects>,
}

impl ThreadLayout {
    pub fn of(vm: &VmStructs, objects: Option<Objects>) -> Option<Self> {
        let anchor = vm.value("JavaThread", "_anchor")?;
        let field = |ty: &str, name: &str| vm.value(ty, name);
        Some(Self {
            list: vm.address("ThreadsSMRSupport", "_java_thread_list")?,
            length: field("ThreadsList", "_length")?,
            threads: field("ThreadsList", "_threads")?,
            osthread: vm.inherited_offset("JavaThread", "_osthread")?,
            thread_id: field("OSThread", "_thread_id")?,
            state: field("JavaThread", "_thread_state")?,
            last_sp: anchor + field("JavaFrameAnchor", "_last_Java_sp")?,
            last_pc: anchor + field("JavaFrameAnchor", "_last_Java_pc")?,
            last_fp: anchor + field("JavaFrameAnchor", "_last_Java_fp")?,
            objects,
        })
    }
}

/// One Java thread: its OS id, its state (`JavaThreadState`), its Java frames top to bottom
/// (`Class.method(parameters)`, the source file and line), and why they end early, if they do.
pub struct JavaThread {
    pub tid: u32,
    /// Its `java.lang.Thread`'s name and state, where they could be read.
    pub name: Option<String>,
    pub java_state: Option<&'static str>,
    pub state: &'static str,
    pub frames: Vec<JavaFrame>,
    pub cut: Option<&'static str>,
}

/// A Java frame: its method, and where: its source file and line, or native.
pub struct JavaFrame {
    pub function: String,
    pub file: Option<String>,
    pub line: Option<u32>,
    pub native: bool,
}

/// The JVM's Java threads now; None when its thread list cannot be read.
pub fn read(m: &dyn RemoteMemory, l: &ThreadLayout, blobs: &[Blob], code: &mut JavaCode) -> Option<Vec<JavaThread>> {
    let list = m.u64(l.list).ok()?;
    let mut len = [0u8; 4];
    m.read(list.wrapping_add(l.length), &mut len).ok()?;
    let len = u64::from(u32::from_le_bytes(len)).min(MAX_THREADS);
    let array = m.field(list, l.threads).ok()?;
    let objects = l.objects.as_ref().and_then(|o| o.read(m));
    let mut threads = Vec::new();
    let mut retries = RETRIES;
    for i in 0..len {
        let Ok(thread) = m.u64(array.wrapping_add(8 * i)) else { continue };
        let tid = m.field(thread, l.osthread).and_then(|os| m.i32(os.wrapping_add(l.thread_id)));
        let Ok(tid) = tid else { continue };
        // A thread running Java code has no last frame to start from: a waiting thread that
        // woke for a moment parks again within microseconds, so it is read again, briefly.
        let mut state = m.i32(thread.wrapping_add(l.state)).map_or("unknown", state_name);
        let mut sp = m.field(thread, l.last_sp).unwrap_or(0);
        let mut again = THREAD_RETRIES;
        while sp == 0 && retries > 0 && again > 0 {
            (retries, again) = (retries - 1, again - 1);
            std::thread::sleep(RETRY_PAUSE);
            state = m.i32(thread.wrapping_add(l.state)).map_or("unknown", state_name);
            sp = m.field(thread, l.last_sp).unwrap_or(0);
        }
        let fp = m.field(thread, l.last_fp).unwrap_or(0);
        let pc = match m.field(thread, l.last_pc) {
            Ok(0) | Err(_) => m.u64(sp.wrapping_sub(8)).unwrap_or(0),
            Ok(pc) => pc,
        };
        let (frames, cut) = match sp {
            // Running Java code, or never in Java (a thread of the VM's own, as jcmd shows it).
            0 if state == "in Java" => (Vec::new(), Some("it runs Java code: its frames are read once it leaves Java")),
            0 => (Vec::new(), None),
            _ => walk(m, blobs, code, (pc, sp, fp)),
        };
        let name = objects.as_ref().and_then(|o| o.name(m, thread));
        let java_state = objects.as_ref().and_then(|o| o.state(m, thread));
        threads.push(JavaThread { tid: tid as u32, name, java_state, state, frames, cut });
    }
    Some(threads)
}

/// The Java frames from (pc, sp, fp), top to bottom, and why the walk stopped early.
type Frames = (Vec<JavaFrame>, Option<&'static str>);

fn walk(m: &dyn RemoteMemory, blobs: &[Blob], code: &mut JavaCode, start: (u64, u64, u64)) -> Frames {
    let (mut pc, mut sp, mut fp) = start;
    let mut frames = Vec::new();
    while frames.len() < MAX_FRAMES {
        let at = blobs.partition_point(|b| b.begin <= pc);
        let Some(blob) = at.checked_sub(1).map(|i| &blobs[i]).filter(|b| pc < b.end) else {
            return (frames, Some("the walk stopped: a frame outside the code cache's blobs"));
        };
        let caller = match blob.frame {
            Frame::Fixed { size, .. } => {
                match code.at(pc) {
                    Some(Code::Method(methods)) => frames.extend(methods.into_iter().map(|f| JavaFrame {
                        function: f.name.to_string(),
                        file: f.file.map(|s| s.to_string()),
                        line: f.line,
                        native: false,
                    })),
                    Some(Code::Blob(_)) => {}
                    None => return (frames, Some("the walk stopped: a compiled frame whose method could not be read")),
                }
                let sender = sp.wrapping_add(u64::from(size));
                (m.u64(sender.wrapping_sub(8)), m.u64(sender.wrapping_sub(16)), Ok(sender))
            }
            Frame::Interpreter => {
                let method = m.u64(fp.wrapping_sub(24)).unwrap_or(0);
                let Some((function, file)) = code.named(method) else {
                    return (frames, Some("the walk stopped: an interpreted frame whose method could not be read"));
                };
                let bcp = m.u64(fp.wrapping_sub(64)).unwrap_or(0);
                let native = code.native(method);
                let line = code.bci(method, bcp).filter(|_| !native).and_then(|bci| code.line(method, bci));
                let (function, file) = (function.to_string(), file.map(|s| s.to_string()));
                frames.push(JavaFrame { function, file, line, native });
                (m.u64(fp.wrapping_add(8)), m.u64(fp), m.u64(fp.wrapping_sub(FRAME_SENDER_SP)))
            }
            Frame::None => (m.u64(sp), Ok(fp), Ok(sp.wrapping_add(8))),
            // The call stub that entered Java: the thread's Java frames are all out.
            Frame::Linked => return (frames, None),
            Frame::Unknown => return (frames, Some("the walk stopped: an adapter the walk cannot step through")),
        };
        let (Ok(next_pc), Ok(next_fp), Ok(next_sp)) = caller else {
            return (frames, Some("the walk stopped: a frame that could not be read"));
        };
        if next_sp <= sp {
            return (frames, Some("the walk stopped: a caller's frame below its callee's"));
        }
        (pc, sp, fp) = (next_pc, next_sp, next_fp);
    }
    (frames, Some("the walk stopped: more frames than a dump reads"))
}

/// `JavaThreadState`'s name (HotSpot's `_thread_*` values, the same from JDK 17 to 25).
fn state_name(state: i32) -> &'static str {
    match state {
        2 | 3 => "new",
        4 | 5 => "in native",
        6 | 7 => "in the VM",
        8 | 9 => "in Java",
        10 | 11 => "blocked",
        _ => "unknown",
    }
}

/// The dump as `jcmd PID Thread.print` lays it out: a thread's header, then `\tat` lines.
pub fn write(threads: &[JavaThread], names: impl Fn(u32) -> String, w: &mut dyn std::io::Write) -> std::io::Result<()> {
    writeln!(w, "Java threads, read from the JVM's memory (a name the JVM's memory does not give is the OS's)\n")?;
    for t in threads {
        let name = t.name.clone().unwrap_or_else(|| names(t.tid));
        writeln!(w, "\"{name}\" nid={} state: {}", t.tid, t.state)?;
        if let Some(state) = t.java_state {
            writeln!(w, "   java.lang.Thread.State: {state}")?;
        }
        for f in &t.frames {
            // A hidden class's name as jcmd writes it (`Chain$$Lambda$14/0x...`).
            let name = f.function.split('(').next().unwrap_or(&f.function).replace('+', "/");
            match (&f.file, f.line) {
                _ if f.native => writeln!(w, "\tat {name}(Native Method)")?,
                (Some(file), Some(line)) => writeln!(w, "\tat {name}({file}:{line})")?,
                (Some(file), None) => writeln!(w, "\tat {name}({file})")?,
                _ => writeln!(w, "\tat {name}(Unknown Source)")?,
            }
        }
        if let Some(why) = t.cut {
            writeln!(w, "\t... ({why})")?;
        }
        writeln!(w)?;
    }
    Ok(())
}
