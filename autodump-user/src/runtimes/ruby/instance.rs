//! CRuby behind the runtime seam: a Ruby file is read once (`RubyFiles`); each Ruby process
//! tells the probes where its interpreter loop is and how to find each thread's execution
//! context (so that walks emit Ruby frames), names those frames, reports its Ruby threads for the
//! `ruby_threads` rule, and gives each bundle a thread dump (`ruby-threads.txt`).

use std::sync::Arc;

use autodump_common::runtimes::{frame_kind, kind, RuntimeProc};

use super::{
    file::RubyFiles,
    names::RubyNames,
    thread_dump::{write_ruby_threads, RubyDump, RubyStatus},
    NameCache, RubyProcess, RubySupport,
};
use crate::runtimes::interpreter::{dumped, InterpreterStatus};
use crate::{
    collect::metrics::RuntimeMetric,
    record::{profile::Profile, Profiles, Recorder},
    runtimes::{
        args::RuntimeArgs,
        seam::{Instance, Loader, Process, Runtime, RuntimeBundle, RuntimeReport, Window},
    },
    symbolize::{Location, RuntimeNames},
    write::BundleFile,
};

pub const RUNTIME: Runtime = Runtime {
    name: "ruby",
    loader: |_: &RuntimeArgs| Box::new(RubyLoader { files: RubyFiles::default() }),
    metric: Some(&RUBY_THREADS),
    frame_kind: Some(kind::RUBY),
    file_reader: None,
};

/// The Ruby threads of a CRuby program's main ractor; as the process's threads: a pool that
/// leaks Ruby threads.
pub static RUBY_THREADS: RuntimeMetric = RuntimeMetric {
    name: "ruby_threads",
    unit: "Ruby threads",
    help: "Ruby threads of the target's CRuby processes",
    default: (50.0, 50.0, 1000.0),
};

struct RubyLoader {
    files: RubyFiles,
}

impl Loader for RubyLoader {
    fn name(&self) -> &'static str {
        "ruby"
    }

    fn attach(&mut self, process: &Process<'_>) -> Option<Box<dyn Instance>> {
        let (pid, maps) = (process.pid, process.maps?);
        let ruby = match RubySupport::detect(pid, maps, &mut self.files) {
            RubySupport::NotRuby => return None,
            RubySupport::Ready(ruby) => {
                tracing::info!(pid, version = %ruby.version, yjit = ruby.yjit, "CRuby: its threads are dumped");
                Ok(ruby)
            }
            RubySupport::Unsupported { version, why } => {
                tracing::warn!(pid, version = %version, "CRuby, but its threads cannot be read: {why}");
                Err((version, why))
            }
        };
        let frames = Err("not probed yet".into());
        Some(Box::new(RubyInstance { pid, ruby, frames, names: NameCache::default(), threads: None }))
    }

    fn files_read(&self) -> Option<(&'static str, u64)> {
        Some(("ruby_files_read", self.files.reads))
    }
}

struct RubyInstance {
    pid: u32,
    /// Its interpreter, or (version, why) it cannot be read.
    ruby: Result<Arc<RubyProcess>, (String, String)>,
    /// Whether the probes emit its Ruby frames, or why not.
    frames: Result<(), String>,
    /// Its iseqs' and C functions' names, read once, for the thread dump.
    names: NameCache,
    /// (threads, threads with Ruby frames) in the last dump.
    threads: Option<(usize, usize)>,
}

impl Instance for RubyInstance {
    fn probe(&self) -> Option<Result<RuntimeProc, String>> {
        Some(Ok(self.ruby.as_ref().ok()?.probe_info()))
    }

    fn probed(&mut self, result: Result<(), String>) {
        self.frames = result;
    }

    fn names(&mut self) -> Option<Box<dyn RuntimeNames>> {
        Some(Box::new(RubyNames::new(self.ruby.as_ref().ok()?.clone())))
    }

    fn metric(&self) -> Option<(&'static RuntimeMetric, u64)> {
        let ruby = self.ruby.as_ref().ok()?;
        let threads = ruby.rt.thread_list().map_err(|e| tracing::debug!("Ruby threads: {e}")).ok()?;
        Some((&RUBY_THREADS, threads.len() as u64))
    }

    fn bundle(&mut self, _recorder: &mut Recorder, window: &Window) -> RuntimeBundle {
        let mut bundle = RuntimeBundle::default();
        if let Some(dump) = window.alive.then(|| self.dump()).flatten() {
            let render = Box::new(move |w: &mut dyn std::io::Write| write_ruby_threads(&dump, w));
            bundle.files.push(BundleFile { name: "ruby-threads.txt", render });
        }
        bundle
    }

    fn report(&self, profiles: &Profiles) -> Option<RuntimeReport> {
        let read = match &self.ruby {
            Ok(ruby) => Ok((ruby.version.as_str(), ruby.file.as_str())),
            Err((version, why)) => Err((version.as_str(), why.as_str())),
        };
        let ruby = self.ruby.as_ref().ok();
        let yjit = "YJIT is on: code it compiled shows as JIT frames, its Ruby frames around it";
        let status = RubyStatus {
            interpreter: InterpreterStatus::new(read, self.threads, &self.frames),
            cpu_share_with_ruby: ruby.and_then(|_| ruby_share(profiles.cpu())),
            offcpu_share_with_ruby: ruby.and_then(|_| ruby_share(profiles.offcpu())),
            unsupported: ruby.filter(|r| r.yjit).map(|_| yjit.to_string()).into_iter().collect(),
        };
        let mut report = RuntimeReport::new("ruby", &status);
        report.notes = status.unsupported.clone();
        let html = status.interpreter.html("CRuby", "Ruby", "ruby-threads.txt", status.cpu_share_with_ruby);
        report.html = Some((None, html));
        Some(report)
    }
}

impl RubyInstance {
    /// Its threads now, each with its Ruby stack.
    fn dump(&mut self) -> Option<RubyDump> {
        let ruby = self.ruby.as_ref().ok()?;
        let pid = self.pid;
        let threads = ruby.rt.threads(&mut self.names).map_err(|e| tracing::warn!("cannot dump Ruby threads: {e}"));
        let threads = dumped(pid, threads.ok()?, |t| t.tid);
        let with_frames = threads.iter().filter(|t| !t.thread.frames.is_empty()).count();
        self.threads = Some((threads.len(), with_frames));
        Some(RubyDump { threads })
    }
}

/// The share of `profile`'s weight whose stacks have Ruby frames; None for an empty profile.
fn ruby_share(profile: &Profile) -> Option<f64> {
    profile.share_with(|l: &Location| !l.kernel && frame_kind(l.address) == kind::RUBY)
}
