//! Code a JIT runtime names in a perf map (Java, Node, any runtime that writes
//! `/tmp/perf-PID.map`), behind the runtime seam: addresses in memory no file backs are named
//! from the map, read on as it grows (`map.rs`); a HotSpot JVM is asked for its map
//! (`hotspot.rs`); the summary says what the map held and named, and what to do when frames stay
//! unnamed.

pub mod args;
pub mod hotspot;
pub mod map;
mod names;
mod report;

use std::{cell::RefCell, rc::Rc};

use args::PerfMapArgs;
use hotspot::PerfMapRequests;
use map::{ns_pid_and_ids, PerfMap};
use names::{is_jit, JitNames, JitRuntime, SharedNames};
use report::JitStatus;

use crate::{
    record::Profiles,
    runtimes::{
        args::RuntimeArgs,
        seam::{Instance, Loader, Process, Runtime, RuntimeReport},
    },
    symbolize::RuntimeNames,
};

pub const RUNTIME: Runtime = Runtime {
    name: "jit",
    loader: |args: &RuntimeArgs| Box::new(JitLoader { args: args.perfmap.clone() }),
    metric: None,
    frame_kind: None,
    file_reader: None,
};

struct JitLoader {
    args: PerfMapArgs,
}

impl Loader for JitLoader {
    fn name(&self) -> &'static str {
        "jit"
    }

    /// Every process may write a perf map: its JIT code is named from it, read as it grows.
    fn attach(&mut self, process: &Process<'_>) -> Option<Box<dyn Instance>> {
        let pid = process.pid;
        let (ns_pid, uid, gid) = ns_pid_and_ids(pid)?;
        let runtime = process.maps.and_then(|m| JitRuntime::detect(process.exe, m.mappings().map(|m| &*m.path)));
        if let Some(runtime) = runtime {
            tracing::info!(pid, runtime = runtime.name(), "JIT runtime: its code is named from /tmp/perf-{ns_pid}.map");
        }
        let map = PerfMap::new(pid, ns_pid, uid, (self.args.jit_map_max_mib << 20) as usize);
        let mut names = JitNames::new(map, runtime);
        // By default a JVM is asked for its map only when its code is not named from its memory.
        if let (Some(JitRuntime::Java), Some(every)) = (runtime, self.args.requests_every(process.code_named)) {
            names.requests = Some(PerfMapRequests::new(pid, ns_pid, (uid, gid), every));
        }
        Some(Box::new(JitInstance { pid, names: Rc::new(RefCell::new(names)), code_named: process.code_named }))
    }
}

struct JitInstance {
    pid: u32,
    /// Its map, shared with the symbolizer, which names from it.
    names: Rc<RefCell<JitNames>>,
    /// Its JIT code is named from its memory (a map, if any, names what that does not).
    code_named: bool,
}

impl Instance for JitInstance {
    fn names(&mut self) -> Option<Box<dyn RuntimeNames>> {
        Some(Box::new(SharedNames { names: self.names.clone(), code_named: self.code_named }))
    }

    /// What summaries say about JIT code over `profiles`: nothing for a process with neither a
    /// known runtime nor a perf map.
    fn report(&self, profiles: &Profiles) -> Option<RuntimeReport> {
        let jit = self.names.borrow();
        let jit = &*jit;
        let found = !jit.map.is_empty() || jit.map.exists();
        if (jit.runtime.is_none() || self.code_named) && !found {
            return None;
        }
        let stats = jit.map.stats;
        let mut hints = java_hints(jit, found, self.pid, self.code_named);
        if jit.runtime == Some(JitRuntime::Node) && !found {
            hints.push(
                "node wrote no perf map: start it with --perf-basic-prof-only-functions (and \
                 --interpreted-frames-native-stack for interpreted functions) to name its JavaScript frames"
                    .into(),
            );
        }
        if stats.left_out > 0 {
            hints.push(format!(
                "{} perf-map entries were dropped, oldest first, to stay within --jit-map-max-mib",
                stats.left_out
            ));
        }
        let status = JitStatus {
            runtime: jit.runtime.map(JitRuntime::name),
            map: jit.map.shown.clone(),
            map_found: found,
            entries: jit.map.len(),
            lines: stats.lines,
            malformed: stats.malformed,
            left_out: stats.left_out,
            rereads: stats.rereads,
            error: jit.error.clone(),
            cpu_share_named: profiles.cpu().share_with(is_jit),
            offcpu_share_named: profiles.offcpu().share_with(is_jit),
            maps_requested: jit.requests.as_ref().map(|r| r.written),
            frame_pointers: jit.requests.as_ref().map(|r| r.flags.preserve_frame_pointer),
            hints,
        };
        let mut report = RuntimeReport::new("jit", &status);
        report.notes = status.hints;
        Some(report)
    }
}

/// What a JVM's summary says: why it has no map and, when its memory does not name its code,
/// that its stacks are leaf-only without frame pointers, and what `Interpreter` frames are.
fn java_hints(jit: &JitNames, found: bool, pid: u32, code_named: bool) -> Vec<String> {
    let mut hints = Vec::new();
    let Some(requests) = jit.requests.as_ref() else {
        if jit.runtime == Some(JitRuntime::Java) && !found {
            hints.push(format!(
                "the JVM wrote no perf map (--jit-map-every 0): `jcmd {pid} Compiler.perfmap` writes one"
            ));
        }
        return hints;
    };
    if let Some(error) = &requests.error {
        hints.push(format!("no perf map from the JVM: {error}"));
    }
    if !requests.flags.preserve_frame_pointer && !code_named {
        hints.push(
            "the JVM runs without -XX:+PreserveFramePointer: its compiled Java frames are leaf-only (walks stop in \
             JIT code); start it with the flag for whole Java stacks"
                .into(),
        );
    }
    if found && !code_named {
        hints.push(
            "frames named Interpreter are Java methods the JVM runs interpreted: a perf map names compiled code only"
                .into(),
        );
    }
    hints
}
