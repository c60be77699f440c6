//! The evidence outlives the host, and someone is told: bundles to a real S3 store (SeaweedFS,
//! signatures checked) through failures, alerts to and from a real Alertmanager, and `/metrics`
//! scraped by a real Prometheus.

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use autodump_tests::{
    require_bpf, scratch_dir,
    servers::{free_port, serve_text, AlertmanagerServer, PrometheusServer, Receiver, SeaweedFs},
    Bundle, Fixture, RunningAgent,
};

const BUCKET: &str = "bundles";
/// Short timings: 500 ms ticks, 10 s lookback.
const FAST: &[&str] = &["--interval", "500ms", "--warmup", "4s", "--lookback", "10s", "--after", "3s"];

fn host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap().trim().to_string()
}

/// The key prefix of a bundle of target `pid:PID` under `ci/`.
fn prefix(bundle: &Path, pid: u32) -> String {
    format!("ci/{}/pid:{pid}/{}/", host(), bundle.file_name().unwrap().to_string_lossy())
}

fn files(bundle: &Path) -> Vec<String> {
    let mut files: Vec<String> =
        std::fs::read_dir(bundle).unwrap().flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    files.sort();
    files
}

/// Waits until the bundle's summary.json is in the store (it goes last); how long that took.
fn wait_uploaded(store: &SeaweedFs, bundle: &Path, pid: u32, timeout: Duration) -> Duration {
    let started = Instant::now();
    let key = format!("{}summary.json", prefix(bundle, pid));
    while store.object(BUCKET, &key).is_none() {
        assert!(started.elapsed() < timeout, "{key} not in the store within {timeout:?}");
        std::thread::sleep(Duration::from_millis(250));
    }
    started.elapsed()
}

/// Every file of the bundle is in the store, byte for byte, once.
fn assert_identical(store: &SeaweedFs, bundle: &Path, pid: u32) {
    let prefix = prefix(bundle, pid);
    let local = files(bundle);
    let stored: Vec<String> =
        store.keys(BUCKET, &prefix).into_iter().map(|k| k.trim_start_matches(&prefix).to_string()).collect();
    assert_eq!(stored, local, "the store holds exactly the bundle's files");
    for file in &local {
        let bytes = store.object(BUCKET, &format!("{prefix}{file}")).unwrap_or_else(|| panic!("{file} missing"));
        assert!(bytes == std::fs::read(bundle.join(file)).unwrap(), "{file} differs from the local copy");
    }
}

fn agent(
    test: &str,
    target: &Fixture,
    store: &SeaweedFs,
    extra: &[&str],
    env: &[(&str, &str)],
) -> (RunningAgent, PathBuf) {
    let out = scratch_dir(test);
    let pid = target.pid.to_string();
    let mut args = vec!["--pid", &pid, "--out", out.to_str().unwrap(), "--upload", "s3://bundles/ci"];
    args.extend_from_slice(FAST);
    args.extend_from_slice(extra);
    let endpoint = store.endpoint();
    let mut vars = vec![("AWS_ENDPOINT_URL", endpoint.as_str()), ("AWS_REGION", "us-east-1")];
    vars.extend_from_slice(env);
    if !env.iter().any(|(k, _)| *k == "AWS_SHARED_CREDENTIALS_FILE") {
        vars.extend([
            ("AWS_ACCESS_KEY_ID", store.access_key.as_str()),
            ("AWS_SECRET_ACCESS_KEY", store.secret_key.as_str()),
        ]);
    }
    let mut agent = RunningAgent::start_with_env(&args, &vars);
    agent.wait_recording(Duration::from_secs(30));
    (agent, out)
}

fn manual_bundle(agent: &mut RunningAgent) -> Bundle {
    std::thread::sleep(Duration::from_secs(2));
    agent.signal(libc::SIGUSR1);
    agent.expect_bundle(Duration::from_secs(30), "a manual bundle")
}

#[test]
fn a_bundle_written_while_the_store_is_down_arrives_whole_once_it_is_back() {
    if !require_bpf("a_bundle_written_while_the_store_is_down_arrives_whole_once_it_is_back") {
        return;
    }
    let mut store = SeaweedFs::start(&scratch_dir("fleet_down_store"), BUCKET);
    store.kill();
    let target = Fixture::start("cpuload", &["1", "5"]);
    let (mut agent, out) = agent("fleet_down", &target, &store, &[], &[]);
    let bundle = manual_bundle(&mut agent);
    std::thread::sleep(Duration::from_secs(8));
    assert_eq!(agent.logged("uploads fail").len(), 1, "said once, not once per retry");
    assert!(std::fs::read_dir(out.join(".upload-queue")).unwrap().count() > 0, "queued on disk");
    store.resume();
    let took = wait_uploaded(&store, &bundle.dir, target.pid, Duration::from_secs(60));
    eprintln!("store back: the bundle arrived {:.1} s later", took.as_secs_f64());
    assert_identical(&store, &bundle.dir, target.pid);
    agent.wait_log(&["uploads work again"], Duration::from_secs(5));
}

#[test]
fn a_store_killed_mid_bundle_and_an_agent_killed_with_its_queue_lose_nothing() {
    if !require_bpf("a_store_killed_mid_bundle_and_an_agent_killed_with_its_queue_lose_nothing") {
        return;
    }
    let mut store = SeaweedFs::start(&scratch_dir("fleet_kills_store"), BUCKET);
    // A Go heap bundle of several MB: 16,000 allocating stacks.
    let target = Fixture::start("bench_goheap", &["14"]);
    let (mut agent, out) = agent("fleet_kills", &target, &store, &["--heap-every", "1s"], &[]);
    std::thread::sleep(Duration::from_secs(3));
    agent.signal(libc::SIGUSR1);
    let bundle = agent.expect_bundle(Duration::from_secs(60), "a Go heap bundle");
    let size: u64 = files(&bundle.dir).iter().map(|f| std::fs::metadata(bundle.dir.join(f)).unwrap().len()).sum();
    // The store dies once the first file is in, the agent with the bundle still queued.
    let prefix = prefix(&bundle.dir, target.pid);
    let started = Instant::now();
    while store.keys(BUCKET, &prefix).is_empty() {
        assert!(started.elapsed() < Duration::from_secs(30), "the upload never began");
        std::thread::sleep(Duration::from_millis(20));
    }
    store.kill();
    agent.signal(libc::SIGKILL);
    store.resume();
    let stored_before = store.keys(BUCKET, &prefix).len();
    let total = files(&bundle.dir).len();
    eprintln!(
        "bundle of {:.1} MB: {stored_before} of {total} files in the store when both were killed",
        size as f64 / 1e6
    );
    assert!(stored_before < total, "the kills came mid-bundle");
    assert!(size > 5_000_000, "a bundle of several MB: {size} bytes");
    // The next agent resumes the queue it finds on disk.
    let pid = target.pid.to_string();
    let endpoint = store.endpoint();
    let args = ["--pid", &pid, "--out", out.to_str().unwrap(), "--upload", "s3://bundles/ci"];
    let vars = [
        ("AWS_ENDPOINT_URL", endpoint.as_str()),
        ("AWS_ACCESS_KEY_ID", store.access_key.as_str()),
        ("AWS_SECRET_ACCESS_KEY", store.secret_key.as_str()),
    ];
    let _next = RunningAgent::start_with_env(&args, &vars);
    let took = wait_uploaded(&store, &bundle.dir, target.pid, Duration::from_secs(90));
    eprintln!("the next agent finished the upload in {:.1} s", took.as_secs_f64());
    assert_identical(&store, &bundle.dir, target.pid);
}

#[test]
fn wrong_credentials_are_said_once_and_sighup_reads_the_fixed_ones() {
    if !require_bpf("wrong_credentials_are_said_once_and_sighup_reads_the_fixed_ones") {
        return;
    }
    let store = SeaweedFs::start(&scratch_dir("fleet_credentials_store"), BUCKET);
    let dir = scratch_dir("fleet_credentials_file");
    let credentials = dir.join("credentials");
    let write = |secret: &str| {
        let text = format!("[ci]\naws_access_key_id = {}\naws_secret_access_key = {secret}\n", store.access_key);
        std::fs::write(&credentials, text).unwrap();
    };
    write("not-the-secret");
    let target = Fixture::start("cpuload", &["1", "5"]);
    let file = credentials.to_str().unwrap().to_string();
    let env = [("AWS_SHARED_CREDENTIALS_FILE", file.as_str()), ("AWS_PROFILE", "ci")];
    let (mut agent, _) = agent("fleet_credentials", &target, &store, &[], &env);
    let bundle = manual_bundle(&mut agent);
    std::thread::sleep(Duration::from_secs(10));
    let said = agent.logged("uploads fail");
    eprintln!("{}", said.join("\n"));
    assert_eq!(said.len(), 1, "one line per change of state, not per retry");
    assert!(
        said[0].contains("SignatureDoesNotMatch") && said[0].contains("s3://bundles"),
        "names the bucket and the error"
    );
    assert!(bundle.dir.join("summary.json").exists(), "the bundle stays on disk");
    write(&store.secret_key);
    agent.signal(libc::SIGHUP);
    wait_uploaded(&store, &bundle.dir, target.pid, Duration::from_secs(30));
    assert_identical(&store, &bundle.dir, target.pid);
}

#[test]
fn a_disk_quota_that_forces_it_drops_queued_bundles_and_counts_them() {
    if !require_bpf("a_disk_quota_that_forces_it_drops_queued_bundles_and_counts_them") {
        return;
    }
    let mut store = SeaweedFs::start(&scratch_dir("fleet_quota_store"), BUCKET);
    store.kill();
    let target = Fixture::start("cpuload", &["1", "5"]);
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let (mut agent, out) =
        agent("fleet_quota", &target, &store, &["--max-disk", "200KiB", "--metrics-addr", &addr], &[]);
    for _ in 0..4 {
        manual_bundle(&mut agent);
    }
    let kept: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .flatten()
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .collect();
    let metrics = ureq::get(&format!("http://{addr}/metrics")).call().unwrap().body_mut().read_to_string().unwrap();
    let dropped = metrics
        .lines()
        .find(|l| l.starts_with("autodump_upload_dropped_bundles_total"))
        .unwrap_or_default()
        .to_string();
    eprintln!("{} bundles kept under 200 KiB; {dropped}", kept.len());
    assert!(!agent.logged("removed a bundle before it was uploaded").is_empty(), "said");
    let n: f64 = dropped.rsplit(' ').next().unwrap_or("0").parse().unwrap();
    assert!(n >= 1.0, "counted in /metrics: {dropped}");
    assert!(metrics.contains("autodump_upload_queue_bundles"), "{metrics}");
}

#[test]
fn every_bundle_is_an_alert_in_alertmanager_and_its_webhook() {
    if !require_bpf("every_bundle_is_an_alert_in_alertmanager_and_its_webhook") {
        return;
    }
    let hook = Receiver::start();
    let am = AlertmanagerServer::start(&scratch_dir("fleet_alerts_am"), hook.port);
    let target = Fixture::start("cpuload", &["1", "5"]);
    let out = scratch_dir("fleet_alerts");
    let pid = target.pid.to_string();
    let url = am.url();
    let mut args =
        vec!["--pid", &pid, "--out", out.to_str().unwrap(), "--alertmanager", &url, "--alert-severity", "page"];
    args.extend_from_slice(FAST);
    let mut agent = RunningAgent::start(&args);
    agent.wait_recording(Duration::from_secs(30));
    let bundle = manual_bundle(&mut agent);
    let started = Instant::now();
    let alert = loop {
        let alerts = am.alerts();
        if let Some(a) = alerts.as_array().unwrap().iter().find(|a| a["labels"]["alertname"] == "AutodumpIncident") {
            break a.clone();
        }
        assert!(started.elapsed() < Duration::from_secs(15), "Alertmanager lists no AutodumpIncident: {alerts}");
        std::thread::sleep(Duration::from_millis(250));
    };
    eprintln!("alert in Alertmanager: {alert}");
    let labels = &alert["labels"];
    assert_eq!(
        (labels["target"].as_str(), labels["reason"].as_str(), labels["severity"].as_str()),
        (Some(&*format!("pid:{pid}")), Some("manual"), Some("page"))
    );
    assert_eq!(labels["host"], host());
    assert_eq!(alert["annotations"]["bundle"], bundle.dir.display().to_string());
    assert_eq!(alert["annotations"]["summary"], bundle.summary()["verdict"]);
    let body = hook.bodies.recv_timeout(Duration::from_secs(15)).expect("the webhook receiver gets the alert");
    assert!(body.contains("AutodumpIncident") && body.contains("\"version\":\"4\""), "{body}");
}

#[test]
fn prometheus_scrapes_metrics_and_its_alert_writes_a_bundle_from_before_it() {
    if !require_bpf("prometheus_scrapes_metrics_and_its_alert_writes_a_bundle_from_before_it") {
        return;
    }
    let hook = Receiver::start();
    let am = AlertmanagerServer::start(&scratch_dir("fleet_prom_am"), hook.port);
    let exporter = serve_text("# TYPE test_latency_seconds gauge\ntest_latency_seconds 5\n");
    let metrics_port = free_port();
    // A calm target with no anomaly of its own; the alert fires after the agent has recorded it.
    let target = Fixture::start("cpuload", &["1", "5"]);
    let out = scratch_dir("fleet_prom");
    let (pid, url, addr) = (target.pid.to_string(), am.url(), format!("127.0.0.1:{metrics_port}"));
    let mut args = vec!["--pid", &pid, "--out", out.to_str().unwrap(), "--alertmanager", &url, "--metrics-addr", &addr];
    args.extend(["--alert-trigger", r#"alertname="HighLatency",service="api""#, "--alert-poll", "1s"]);
    args.extend_from_slice(FAST);
    let mut agent = RunningAgent::start(&args);
    agent.wait_recording(Duration::from_secs(30));
    std::thread::sleep(Duration::from_secs(8));
    let rules = "groups:\n  - name: ci\n    rules:\n      - alert: HighLatency\n        expr: test_latency_seconds > 1\n        labels:\n          service: api\n";
    let prometheus = PrometheusServer::start(
        &scratch_dir("fleet_prom_server"),
        &[("exporter", exporter), ("autodump", metrics_port)],
        rules,
        am.port,
    );
    let bundle = agent.expect_bundle(Duration::from_secs(60), "a bundle for the HighLatency alert");
    let summary = bundle.summary();
    let reason = &summary["reason"];
    eprintln!("alert bundle: {reason}; window {}", summary["window"]);
    assert_eq!(reason["kind"], "alert");
    assert_eq!(reason["alert"]["name"], "HighLatency");
    assert_eq!(reason["alert"]["labels"]["service"], "api");
    let (start, trigger) =
        (summary["window"]["start"].as_f64().unwrap(), summary["window"]["trigger"].as_f64().unwrap());
    assert!(trigger - start >= 5.0, "the window reaches back before the alert: {:.1} s", trigger - start);
    // The alert stays firing: one bundle, not one per poll.
    assert!(
        agent.next_bundle(Duration::from_secs(8)).map(|b| b.summary()["reason"]["kind"] == "alert") != Some(true),
        "one bundle per alert"
    );
    // Prometheus scraped the agent's /metrics: bundles written, the target's CPU.
    let started = Instant::now();
    let (bundles, cpu) = loop {
        let bundles = prometheus.query(&format!("autodump_bundles_total{{target=\"pid:{pid}\",reason=\"alert\"}}"));
        let cpu = prometheus.query(&format!("autodump_target_cpu_cores{{target=\"pid:{pid}\"}}"));
        if !bundles.is_empty() && !cpu.is_empty() {
            break (bundles, cpu);
        }
        assert!(started.elapsed() < Duration::from_secs(30), "Prometheus has no autodump series");
        std::thread::sleep(Duration::from_millis(500));
    };
    eprintln!("Prometheus: {bundles:?}; {cpu:?}");
    assert_eq!(bundles[0]["value"][1], "1");
    let cores: f64 = cpu[0]["value"][1].as_str().unwrap().parse().unwrap();
    assert!((0.0..0.5).contains(&cores), "a calm target's CPU in cores: {cores}");
}
