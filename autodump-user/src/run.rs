//! Record mode: profile the target for a fixed time (or until Ctrl-C or its exit) and write
//! one bundle with reason `record`.

use std::{
    path::PathBuf,
    time::{Duration, Instant, SystemTime},
};

use tokio::signal::unix::{signal, SignalKind};

use crate::{
    cli::Cli,
    collect::{
        drain::Drainer,
        monotonic_ns,
        process::{ProcessError, Target},
    },
    error::{AgentError, ExitCode},
    probes::{ProbeConfig, Probes},
    progress::Progress,
    record::Recorder,
    write::{self, bundle, summary, Recording},
};

/// Why the recording window closed.
#[derive(Debug, PartialEq, Eq)]
enum Stop {
    Deadline,
    Signal,
    TargetExited,
}

pub async fn record(cli: Cli) -> anyhow::Result<PathBuf> {
    let target = Target::open(cli.pid).map_err(|e| match e {
        ProcessError::NotFound(_) => AgentError::new(ExitCode::NoSuchProcess, e.to_string()),
        _ => AgentError::new(ExitCode::Internal, e.to_string()),
    })?;
    bundle::prepare_out_dir(&cli.out).map_err(|e| AgentError::new(ExitCode::Output, e.to_string()))?;

    let config = ProbeConfig {
        pid: cli.pid,
        frequency_hz: cli.frequency,
        stack_slots: cli.stack_slots,
        count_slots: cli.count_slots,
        thread_slots: cli.thread_slots,
        btf: cli.btf.clone(),
    };
    let (mut probes, maps) = Probes::load(&config)?;
    spawn_probe_logger(&mut probes);
    let mut drainer = Drainer::new(maps);
    let mut recorder = Recorder::new(target.clone(), cli.frequency);
    recorder.observe_target();

    probes.attach(cli.frequency)?;
    let start = SystemTime::now();
    let started = Instant::now();
    tracing::info!(pid = cli.pid, comm = %target.comm, frequency_hz = cli.frequency, "recording");

    let stop = watch_until_stop(&cli, &target, &mut drainer, &mut recorder, started).await?;

    let end = SystemTime::now();
    let end_ns = monotonic_ns();
    probes.detach();
    if stop != Stop::TargetExited {
        recorder.observe_target();
    }
    // Two drains: the generation in use at detach, then the one the first flip switched to.
    for _ in 0..2 {
        let drained = drainer.drain().map_err(internal)?;
        recorder.add(&drained);
    }
    let blocked = drainer.still_blocked(end_ns).map_err(internal)?;
    recorder.add_off_cpu(&blocked);
    let stats = drainer.stats().map_err(internal)?;

    let target = recorder.target();
    let summary = summary::build(&summary::Facts {
        reason: "record",
        pid: target.pid,
        comm: &target.comm,
        exe: &target.exe.display().to_string(),
        frequency_hz: cli.frequency,
        start,
        end,
        cpu: &recorder.cpu,
        offcpu: &recorder.offcpu,
        threads: &recorder.threads,
        dropped: stats,
        exited: stop == Stop::TargetExited,
    });
    let recording = Recording { cpu: &recorder.cpu, offcpu: &recorder.offcpu, start, end, summary };
    let path =
        write::write_bundle(&cli.out, &recording).map_err(|e| AgentError::new(ExitCode::Output, e.to_string()))?;
    tracing::info!(path = %path.display(), reason = "record", "bundle written");
    Ok(path)
}

async fn watch_until_stop(
    cli: &Cli,
    target: &Target,
    drainer: &mut Drainer,
    recorder: &mut Recorder,
    started: Instant,
) -> anyhow::Result<Stop> {
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut tick = tokio::time::interval(cli.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await; // the first tick fires at once
    let deadline = tokio::time::sleep(cli.duration.unwrap_or(Duration::MAX / 4));
    tokio::pin!(deadline);
    let progress = Progress::new();
    let stop = loop {
        tokio::select! {
            _ = &mut deadline => break Stop::Deadline,
            _ = sigint.recv() => break Stop::Signal,
            _ = sigterm.recv() => break Stop::Signal,
            _ = tick.tick() => {
                if !target.is_alive() {
                    tracing::warn!(pid = target.pid, "target exited; writing what was recorded");
                    break Stop::TargetExited;
                }
                recorder.observe_target();
                let drained = drainer.drain().map_err(internal)?;
                recorder.add(&drained);
                let off_cpu = Duration::from_nanos(recorder.offcpu.total().nanos);
                progress.update(target.pid, started.elapsed(), cli.duration, recorder.cpu.total().count, off_cpu);
            }
        }
    };
    progress.finish();
    Ok(stop)
}

fn internal(e: impl std::fmt::Display) -> AgentError {
    AgentError::new(ExitCode::Internal, e.to_string())
}

/// Forwards the probes' aya-log messages into the agent's log while the runtime lives.
fn spawn_probe_logger(probes: &mut Probes) {
    let Some(logger) = probes.take_logger() else {
        return;
    };
    // SAFETY: the logger owns its ring-buffer fd and keeps it open for as long as it lives,
    // and the AsyncFd owns the logger.
    let registered = unsafe { tokio::io::unix::AsyncFd::register_with_interest(logger, tokio::io::Interest::READABLE) };
    let Ok(mut fd) = registered else { return };
    tokio::spawn(async move {
        while let Ok(mut guard) = fd.readable_mut().await {
            guard.get_inner_mut().flush();
            guard.clear_ready();
        }
    });
}
