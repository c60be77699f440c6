//! Names of JIT code (Java, Node, any runtime that writes a perf map): addresses in memory no
//! file backs are looked up in the process's `/tmp/perf-PID.map`, read on as it grows.

use std::{collections::HashSet, sync::Arc};

use super::{hotspot::PerfMapRequests, map::PerfMap};
use crate::{
    collect::maps::Mapping,
    symbolize::{Frame, Location, RuntimeNames, Update},
};

/// How long writing a bundle waits for a JVM to write its map (an answer comes in milliseconds
/// once its attach socket is open; the first attach takes longer and is started at once).
const BUNDLE_MAP_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// A JIT runtime the agent recognises, for what the summary tells about its map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JitRuntime {
    /// HotSpot (`libjvm.so`).
    Java,
    /// Node.js (an executable named `node` or `nodejs`, or `libnode.so`).
    Node,
}

impl JitRuntime {
    /// The runtime of a process with these executable mappings and this executable.
    pub fn detect<'a>(exe: &std::path::Path, mut paths: impl Iterator<Item = &'a str>) -> Option<Self> {
        let file = |p: &'a str| p.rsplit('/').next().unwrap_or(p);
        if matches!(exe.file_name().and_then(|n| n.to_str()), Some("node" | "nodejs")) {
            return Some(Self::Node);
        }
        paths.find_map(|p| match file(p) {
            "libjvm.so" => Some(Self::Java),
            f if f.starts_with("libnode.so") => Some(Self::Node),
            _ => None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Java => "java",
            Self::Node => "node",
        }
    }
}

pub struct JitNames {
    pub map: PerfMap,
    pub runtime: Option<JitRuntime>,
    /// Why the map is not used, said once per change.
    pub error: Option<String>,
    /// Addresses named (or left unnamed) from the map as it was: named again once it grows.
    named: HashSet<u64>,
    /// Where the agent said the map was found, once.
    found_said: bool,
    /// A HotSpot JVM: asked for its map every `--jit-map-every`.
    pub requests: Option<PerfMapRequests>,
}

impl JitNames {
    pub fn new(map: PerfMap, runtime: Option<JitRuntime>) -> Self {
        Self { map, runtime, error: None, named: HashSet::new(), found_said: false, requests: None }
    }

    /// Asks the JVM for a fresh map when one is due; when one has come, reads it whole and
    /// returns the addresses whose cached names are stale.
    pub fn poll(&mut self, pid: u32) -> Vec<u64> {
        if !self.requests.as_mut().is_some_and(PerfMapRequests::poll) {
            return Vec::new();
        }
        self.map.reread();
        self.update(pid)
    }

    /// Just before a bundle is written: asks a JVM for its map now, waiting up to
    /// `BUNDLE_MAP_WAIT`, and reads what the map gained; returns the stale addresses.
    pub fn ask_now(&mut self, pid: u32) -> Vec<u64> {
        if self.requests.as_mut().is_some_and(|r| r.ask_now(BUNDLE_MAP_WAIT)) {
            self.map.reread();
        }
        self.update(pid)
    }

    /// Reads what the runtime added to its map; returns the addresses whose cached names are
    /// stale (the map changed).
    pub fn update(&mut self, pid: u32) -> Vec<u64> {
        match self.map.update() {
            Ok(changed) => {
                self.error = None;
                if changed && !self.found_said && !self.map.is_empty() {
                    self.found_said = true;
                    tracing::info!(pid, map = %self.map.shown, "JIT code is named from its perf map");
                }
                if changed {
                    return self.named.drain().collect();
                }
            }
            Err(e) => {
                let said = e.to_string();
                if self.error.as_deref() != Some(said.as_str()) {
                    tracing::warn!(pid, "{said}");
                    self.error = Some(said);
                }
            }
        }
        Vec::new()
    }

    /// The location of `addr` in memory no file backs, when the map names it.
    pub fn location(&mut self, addr: u64, mapping: Option<&Mapping>) -> Option<Location> {
        self.named.insert(addr);
        let name = self.map.name(addr)?.clone();
        let frame = Frame { function: name, file: Some(Arc::from(self.map.shown.as_str())), line: None };
        Some(Location {
            address: addr,
            kernel: false,
            mapping: mapping.cloned(),
            frames: [frame].into(),
            unnamed: None,
        })
    }

    /// Forgets which addresses were named (the symbolizer's cache was cleared).
    pub fn clear(&mut self) {
        self.named.clear();
    }
}

/// The names the symbolizer asks for, shared with the process's instance (its summary reads the
/// map's figures). `code_named`: another runtime names the process's JIT code from its memory, so
/// an unnamed address is no reason to read the map at once (each tick still does).
pub struct SharedNames {
    pub names: std::rc::Rc<std::cell::RefCell<JitNames>>,
    pub code_named: bool,
}

impl RuntimeNames for SharedNames {
    fn names_anonymous(&self) -> bool {
        true
    }

    fn anonymous(&mut self, address: u64, mapping: Option<&Mapping>) -> Option<Location> {
        self.names.borrow_mut().location(address, mapping)
    }

    fn update(&mut self, pid: u32, when: Update) -> Vec<u64> {
        let mut jit = self.names.borrow_mut();
        match when {
            // Asks a JVM for a fresh map when one is due, and reads what a known runtime, or a
            // process whose map was found, added to it.
            Update::Tick => {
                let mut stale = jit.poll(pid);
                if jit.runtime.is_some() || !jit.map.is_empty() {
                    stale.extend(jit.update(pid));
                }
                stale
            }
            Update::Unnamed if self.code_named => Vec::new(),
            Update::Unnamed => jit.update(pid),
            Update::Bundle { alive: true } => jit.ask_now(pid),
            Update::Bundle { alive: false } => jit.update(pid),
        }
    }

    fn clear(&mut self) {
        self.names.borrow_mut().clear();
    }
}

/// Whether `location` was named from a perf map.
pub fn is_jit(location: &Location) -> bool {
    !location.kernel
        && location.unnamed.is_none()
        && location.frames.first().and_then(|f| f.file.as_deref()).is_some_and(|f| f.starts_with("/tmp/perf-"))
        && location.mapping.as_ref().is_none_or(|m| !m.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtimes_are_told_by_their_files() {
        let detect = |exe: &str, paths: &[&str]| JitRuntime::detect(exe.as_ref(), paths.iter().copied());
        let jvm = "/usr/lib/jvm/java-17-openjdk-amd64/lib/server/libjvm.so";
        assert_eq!(detect("/usr/lib/jvm/java-17-openjdk-amd64/bin/java", &[jvm]), Some(JitRuntime::Java));
        assert_eq!(detect("/usr/bin/node", &["/usr/lib/x86_64-linux-gnu/libc.so.6"]), Some(JitRuntime::Node));
        assert_eq!(detect("/opt/app/server", &["/usr/lib/libnode.so.108"]), Some(JitRuntime::Node));
        assert_eq!(detect("/usr/bin/python3.11", &["/usr/lib/x86_64-linux-gnu/libc.so.6"]), None);
    }
}
