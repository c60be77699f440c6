//! Record mode (`--duration`): profile the target for a fixed time, or until Ctrl-C or its
//! exit, and write one bundle with reason `record`.

use std::{
    path::PathBuf,
    time::{Duration, Instant, SystemTime},
};

use tokio::signal::unix::{signal, SignalKind};

use crate::{
    cli::Cli,
    collect::unix_now,
    error::{AgentError, ExitCode},
    host::ProbeHost,
    model::summary,
    progress::Progress,
    record::Profiles,
    session::Session,
    write::{self, Recording},
};

pub async fn record(cli: Cli, duration: Duration) -> anyhow::Result<PathBuf> {
    let pid = cli.pid.ok_or_else(|| AgentError::new(ExitCode::Usage, "record mode needs --pid"))?;
    let target = Session::check(&cli, pid)?;
    let mut host = ProbeHost::start(&cli, &[pid], 1)?;
    let mut session = Session::open(&mut host, &cli, target)?;
    let start = SystemTime::now();
    let started = Instant::now();
    let mut totals = Profiles::new();

    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut tick = tokio::time::interval(cli.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await; // the first tick fires at once
    let mut code_check = tokio::time::interval(cli.code_check);
    code_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let deadline = tokio::time::sleep(duration);
    tokio::pin!(deadline);
    let progress = Progress::new();
    let exited = loop {
        tokio::select! {
            _ = &mut deadline => break false,
            _ = sigint.recv() => break false,
            _ = sigterm.recv() => break false,
            // Walks stopped in code compiled since its JIT's code was last read: read it now.
            _ = code_check.tick() => if host.new_code() {
                session.read_code(&mut host);
            },
            _ = tick.tick() => {
                if !session.check_alive() {
                    tracing::warn!(pid = pid, "target exited; writing what was recorded");
                    break true;
                }
                session.observe(&mut host);
                let part = host.drain()?.remove(&pid).unwrap_or_default();
                totals.merge(&session.tick(&part).profiles);
                let off_cpu = Duration::from_nanos(totals.offcpu().total().nanos);
                progress.update(pid, started.elapsed(), Some(duration), totals.cpu().total().count, off_cpu);
            }
        }
    };
    progress.finish();

    // What the runtimes read as the window closes (the process must still be there to be read).
    let runtimes = session.runtime_bundles((unix_now(start), unix_now(SystemTime::now())), !exited);
    let memory = session.memory.report(unix_now(start), unix_now(SystemTime::now()));
    let part = host.stop()?.remove(&pid).unwrap_or_default();
    let last = session.finish(&host, &part, unix_now(start))?;
    totals.merge(&last.profiles);
    runtimes.profiles.into_iter().for_each(|p| totals.insert(p));
    session.name_late_frames(&mut totals, !exited);
    let end = SystemTime::now();
    let mut facts = summary::Facts {
        start: unix_now(start),
        end: unix_now(end),
        exited,
        exit: host.exit_status(pid).filter(|_| exited),
        memory: Some(memory),
        ..session.facts(&host, crate::model::reports::Reason::of_kind("record"), &totals)?
    };
    let html = facts.runtimes.iter_mut().filter_map(|r| r.html.take()).collect();
    let summary = summary::build(facts);
    let (diffs, files) = (runtimes.diffs, runtimes.files);
    let recording = Recording { profiles: &totals, summary, charts: None, diffs, files, html };
    let written =
        write::write_bundle(&cli.out, recording).map_err(|e| AgentError::new(ExitCode::Output, e.to_string()))?;
    let path = written.path.clone();
    tracing::info!(path = %path.display(), reason = "record", peak_rss_mib = peak_rss_mib(), "bundle written");
    ship(&cli, pid, &written);
    Ok(path)
}

/// Record mode waits this long for its bundle to be uploaded and announced before exiting; what
/// is left stays queued on disk for the next agent.
const SHIP_WAIT: Duration = Duration::from_secs(60);

/// Uploads and announces the record bundle, when `--upload` or `--alertmanager` ask.
fn ship(cli: &Cli, pid: u32, written: &write::Written) {
    if cli.upload.is_none() && cli.alertmanager.is_none() {
        return;
    }
    let settings = crate::ship::ShipSettings {
        alertmanager: cli.alertmanager.clone(),
        severity: cli.alert_severity.clone(),
        resolve_after: cli.alert_resolve_after,
        bundle_url: cli.bundle_url.clone(),
        upload_rate: cli.upload_rate,
    };
    match crate::ship::Shipping::start(settings, cli.upload.is_some(), &cli.out) {
        Ok(ship) => {
            ship.bundle_written(&format!("pid:{pid}"), cli.upload.as_ref(), written);
            if !ship.flush(SHIP_WAIT) {
                tracing::warn!("the bundle is not uploaded or announced yet; it stays queued for the next agent");
            }
        }
        Err(e) => tracing::warn!("cannot upload or announce the bundle: {e}"),
    }
}

/// The agent's own peak resident size (VmHWM), in MiB.
fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib =
        status.lines().find_map(|l| l.strip_prefix("VmHWM:")).and_then(|v| v.split_whitespace().next()?.parse().ok());
    kib.map_or(0.0, |k: f64| k / 1024.0)
}
