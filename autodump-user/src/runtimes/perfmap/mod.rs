//! A session's JIT side: naming JIT code from the process's perf map, and what the summary says
//! of it (the map, its entries, the share it named, what to do when frames stay unnamed).

use super::Session;
use crate::{
    cli::Cli,
    collect::{
        hotspot::PerfMapRequests,
        maps::MemoryMap,
        perfmap::{ns_pid_and_ids, PerfMap},
        process::Target,
    },
    model::jit::JitStatus,
    record::{Profiles, Recorder},
    symbolize::jit::{is_jit, JitNames, JitRuntime},
};

/// Has `recorder` name the JIT code of its target from its perf map, read as it grows.
pub(super) fn name_jit_code(recorder: &mut Recorder, target: &Target, maps: Option<&MemoryMap>, cli: &Cli) {
    let Some((ns_pid, uid, gid)) = ns_pid_and_ids(target.pid) else { return };
    let runtime = maps.and_then(|m| JitRuntime::detect(&target.exe, m.mappings().map(|m| &*m.path)));
    if let Some(runtime) = runtime {
        tracing::info!(
            pid = target.pid,
            runtime = runtime.name(),
            "JIT runtime: its code is named from /tmp/perf-{ns_pid}.map"
        );
    }
    let map = PerfMap::new(target.pid, ns_pid, uid, (cli.jit_map_max_mib << 20) as usize);
    let mut names = JitNames::new(map, runtime);
    if runtime == Some(JitRuntime::Java) && !cli.jit_map_every.is_zero() {
        names.requests = Some(PerfMapRequests::new(target.pid, ns_pid, (uid, gid), cli.jit_map_every));
    }
    recorder.set_jit(names);
    // A JVM is asked at once: its map is there by the first drain.
    recorder.poll_jit();
}

impl Session {
    /// What summaries say about JIT code over `profiles`: absent for a process with neither a
    /// known runtime nor a perf map.
    pub fn jit_status(&self, profiles: &Profiles) -> Option<JitStatus> {
        let jit = self.recorder.jit()?;
        let found = !jit.map.is_empty() || jit.map.exists();
        if jit.runtime.is_none() && !found {
            return None;
        }
        let stats = jit.map.stats;
        let mut hints = java_hints(jit, found, self.target.pid);
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
        Some(JitStatus {
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
        })
    }
}

/// What a JVM's summary says: why it has no map, that its stacks are leaf-only without frame
/// pointers, and what `Interpreter` frames are.
fn java_hints(jit: &JitNames, found: bool, pid: u32) -> Vec<String> {
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
    if !requests.flags.preserve_frame_pointer {
        hints.push(
            "the JVM runs without -XX:+PreserveFramePointer: its compiled Java frames are leaf-only (walks stop in \
             JIT code); start it with the flag for whole Java stacks"
                .into(),
        );
    }
    if found {
        hints.push(
            "frames named Interpreter are Java methods the JVM runs interpreted: a perf map names compiled code only"
                .into(),
        );
    }
    hints
}
