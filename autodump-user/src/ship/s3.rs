//! An S3-compatible store: `s3://BUCKET/PREFIX`, with the endpoint, credentials and region read
//! the way AWS tools read them. Requests are signed with SigV4 by `rusty-s3` and sent by `ureq`;
//! each file streams from disk with its SHA-256 in `x-amz-checksum-sha256`, which the store
//! checks, so a file is stored whole and right or not at all.

use std::{
    fs::File,
    io::Read,
    path::{Path, PathBuf},
    time::Duration,
};

use base64::Engine as _;
use rusty_s3::{Bucket, Credentials, S3Action, UrlStyle};
use sha2::{Digest, Sha256};

/// Signed requests are valid this long (sent at once; the margin covers clock skew).
const SIGNATURE_VALID: Duration = Duration::from_secs(300);
/// One request may take this long (a slow store is retried later, not waited on for ever).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

/// `s3://BUCKET/PREFIX`, as given to `--upload` or `upload =` in the config file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct S3Url {
    pub bucket: String,
    /// Without leading or trailing slashes; may be empty.
    pub prefix: String,
}

impl S3Url {
    pub fn parse(text: &str) -> Result<Self, String> {
        let rest =
            text.strip_prefix("s3://").ok_or_else(|| format!("'{text}' is not an s3:// URL (s3://BUCKET/PREFIX)"))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let valid = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.';
        if bucket.len() < 3 || bucket.len() > 63 || !bucket.chars().all(valid) {
            return Err(format!("'{bucket}' is not a bucket name (3 to 63 lower-case letters, digits, '-' or '.')"));
        }
        Ok(Self { bucket: bucket.to_string(), prefix: prefix.trim_matches('/').to_string() })
    }

    /// `s3://BUCKET/KEY` of an object.
    pub fn object(&self, key: &str) -> String {
        format!("s3://{}/{key}", self.bucket)
    }
}

impl std::fmt::Display for S3Url {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "s3://{}/{}", self.bucket, self.prefix)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum S3Error {
    /// The store said no: a wrong key, a missing bucket, access denied. Retrying the same request
    /// will not help until the setup changes (credentials reloaded, bucket created).
    #[error("s3://{bucket}: {code}: {message}")]
    Refused { bucket: String, status: u16, code: String, message: String },
    /// The store is down or slow, or the network failed: retried.
    #[error("s3://{bucket}: {source}")]
    Unreachable { bucket: String, source: Box<ureq::Error> },
    #[error("cannot read {path}: {source}")]
    File { path: PathBuf, source: std::io::Error },
    #[error(
        "no credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or a profile in the shared credentials file"
    )]
    NoCredentials,
    #[error("bad endpoint {0}")]
    Endpoint(String),
}

/// Where the store is and who we are, read from the environment (and the shared credentials
/// file) each time the uploader starts or the agent is told to reload (SIGHUP).
#[derive(Clone)]
pub struct S3Settings {
    pub endpoint: String,
    pub region: String,
    pub path_style: bool,
    credentials: Credentials,
}

impl std::fmt::Debug for S3Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "endpoint {} region {} key {}", self.endpoint, self.region, self.credentials.key())
    }
}

impl S3Settings {
    /// As the AWS tools read them: `AWS_ENDPOINT_URL_S3`, else `AWS_ENDPOINT_URL` (then
    /// path-style addressing), else AWS's own endpoint for the region; `AWS_REGION`, else
    /// `AWS_DEFAULT_REGION`, else `us-east-1`; the keys from `AWS_ACCESS_KEY_ID`,
    /// `AWS_SECRET_ACCESS_KEY` and `AWS_SESSION_TOKEN`, else from the shared credentials file's
    /// profile (`AWS_SHARED_CREDENTIALS_FILE`, `AWS_PROFILE`).
    pub fn from_env(env: impl Fn(&str) -> Option<String>) -> Result<Self, S3Error> {
        let set = |k: &str| env(k).filter(|v| !v.is_empty());
        let region = set("AWS_REGION").or_else(|| set("AWS_DEFAULT_REGION")).unwrap_or_else(|| "us-east-1".into());
        let custom = set("AWS_ENDPOINT_URL_S3").or_else(|| set("AWS_ENDPOINT_URL"));
        let path_style = custom.is_some();
        let endpoint = custom.unwrap_or_else(|| format!("https://s3.{region}.amazonaws.com"));
        let credentials = match (set("AWS_ACCESS_KEY_ID"), set("AWS_SECRET_ACCESS_KEY")) {
            (Some(key), Some(secret)) => match set("AWS_SESSION_TOKEN") {
                Some(token) => Credentials::new_with_token(key, secret, token),
                None => Credentials::new(key, secret),
            },
            _ => super::credentials::from_file(&env).ok_or(S3Error::NoCredentials)?,
        };
        Ok(Self { endpoint, region, path_style, credentials })
    }
}

/// One bucket, ready to take files.
pub struct S3Store {
    bucket: Bucket,
    settings: S3Settings,
    agent: ureq::Agent,
    /// Bytes a second a file is sent at most (`--upload-rate`).
    rate: u64,
}

impl S3Store {
    pub fn new(url: &S3Url, settings: S3Settings, rate: u64) -> Result<Self, S3Error> {
        let endpoint =
            settings.endpoint.parse().map_err(|e| S3Error::Endpoint(format!("{}: {e}", settings.endpoint)))?;
        let style = if settings.path_style { UrlStyle::Path } else { UrlStyle::VirtualHost };
        let bucket = Bucket::new(endpoint, style, url.bucket.clone(), settings.region.clone())
            .map_err(|e| S3Error::Endpoint(format!("{}: {e}", settings.endpoint)))?;
        let config =
            ureq::Agent::config_builder().timeout_global(Some(REQUEST_TIMEOUT)).http_status_as_error(false).build();
        Ok(Self { bucket, settings, agent: config.into(), rate: rate.max(1) })
    }

    /// Stores `path` at `key`, streamed from disk; the store checks its SHA-256. Idempotent: a
    /// retry replaces the object with the same bytes.
    pub fn put_file(&self, key: &str, path: &Path) -> Result<u64, S3Error> {
        let file_err = |source| S3Error::File { path: path.to_path_buf(), source };
        let checksum = sha256_base64(path).map_err(file_err)?;
        let mut action = self.bucket.put_object(Some(&self.settings.credentials), key);
        action.headers_mut().insert("x-amz-checksum-sha256", checksum.clone());
        let url = action.sign(SIGNATURE_VALID);
        let file = File::open(path).map_err(file_err)?;
        let len = file.metadata().map_err(file_err)?.len();
        let body = Paced { inner: file, rate: self.rate, sent: 0, started: std::time::Instant::now() };
        let response = self
            .agent
            .put(url.as_str())
            .header("x-amz-checksum-sha256", &checksum)
            .header("Content-Length", len)
            .send(ureq::SendBody::from_owned_reader(body))
            .map_err(|e| S3Error::Unreachable { bucket: self.bucket.name().to_string(), source: Box::new(e) })?;
        self.check(response)?;
        Ok(len)
    }

    /// The object at `key` (tests and tools; bundles are not read back by the agent).
    pub fn get(&self, key: &str) -> Result<Vec<u8>, S3Error> {
        let url = self.bucket.get_object(Some(&self.settings.credentials), key).sign(SIGNATURE_VALID);
        let mut response = self.get_signed(&url)?;
        let mut bytes = Vec::new();
        response
            .body_mut()
            .as_reader()
            .read_to_end(&mut bytes)
            .map_err(|source| S3Error::File { path: key.into(), source })?;
        Ok(bytes)
    }

    /// Keys under `prefix` (tests and tools).
    pub fn list(&self, prefix: &str) -> Result<Vec<String>, S3Error> {
        let mut action = self.bucket.list_objects_v2(Some(&self.settings.credentials));
        action.with_prefix(prefix);
        let mut response = self.get_signed(&action.sign(SIGNATURE_VALID))?;
        let text = response.body_mut().read_to_string().unwrap_or_default();
        let parsed = rusty_s3::actions::ListObjectsV2::parse_response(&text)
            .map_err(|e| self.refused(200, "InvalidResponse", &e.to_string()))?;
        Ok(parsed.contents.into_iter().map(|o| o.key).collect())
    }

    /// GET a presigned URL; an answer other than 2xx is the store's refusal.
    fn get_signed(&self, url: &impl AsRef<str>) -> Result<ureq::http::Response<ureq::Body>, S3Error> {
        let response = self
            .agent
            .get(url.as_ref())
            .call()
            .map_err(|e| S3Error::Unreachable { bucket: self.bucket.name().to_string(), source: Box::new(e) })?;
        self.check(response)
    }

    fn check(
        &self,
        mut response: ureq::http::Response<ureq::Body>,
    ) -> Result<ureq::http::Response<ureq::Body>, S3Error> {
        let status = response.status().as_u16();
        if (200..300).contains(&status) {
            return Ok(response);
        }
        let body = response.body_mut().with_config().limit(64 << 10).read_to_string().unwrap_or_default();
        let tag = |name: &str| {
            body.split_once(&format!("<{name}>"))
                .and_then(|(_, rest)| rest.split_once(&format!("</{name}>")))
                .map(|(v, _)| v.to_string())
        };
        let code = tag("Code").unwrap_or_else(|| format!("HTTP {status}"));
        let message = tag("Message").unwrap_or_default();
        // Throttling and the store's own failures are passing: retried like an unreachable store.
        if status == 429 || status >= 500 {
            let source = Box::new(ureq::Error::StatusCode(status));
            return Err(S3Error::Unreachable { bucket: self.bucket.name().to_string(), source });
        }
        Err(self.refused(status, &code, &message))
    }

    fn refused(&self, status: u16, code: &str, message: &str) -> S3Error {
        S3Error::Refused {
            bucket: self.bucket.name().to_string(),
            status,
            code: code.to_string(),
            message: message.to_string(),
        }
    }
}

/// A reader that delivers at most `rate` bytes a second: an upload takes a sliver of a core and
/// of the host's network, not all it can get.
struct Paced<R> {
    inner: R,
    rate: u64,
    sent: u64,
    started: std::time::Instant,
}

impl<R: Read> Read for Paced<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let due = Duration::from_secs_f64(self.sent as f64 / self.rate as f64);
        if let Some(ahead) = due.checked_sub(self.started.elapsed()) {
            std::thread::sleep(ahead);
        }
        let max = buf.len().min(64 << 10);
        let n = self.inner.read(&mut buf[..max])?;
        self.sent += n as u64;
        Ok(n)
    }
}

/// The file's SHA-256, base64, read in blocks.
fn sha256_base64(path: &Path) -> std::io::Result<String> {
    let mut file = File::open(path)?;
    let mut hasher = Sha256::new();
    let mut block = vec![0u8; 64 << 10];
    loop {
        let n = file.read(&mut block)?;
        if n == 0 {
            break;
        }
        hasher.update(&block[..n]);
    }
    Ok(base64::engine::general_purpose::STANDARD.encode(hasher.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_and_bad_ones_are_told() {
        assert_eq!(
            S3Url::parse("s3://bundles/prod/eu/").unwrap(),
            S3Url { bucket: "bundles".into(), prefix: "prod/eu".into() }
        );
        assert_eq!(S3Url::parse("s3://bundles").unwrap().prefix, "");
        assert!(S3Url::parse("https://x/y").unwrap_err().contains("not an s3:// URL"));
        assert!(S3Url::parse("s3://Bad_Bucket/x").unwrap_err().contains("bucket name"));
        assert_eq!(S3Url::parse("s3://b-1.x/p").unwrap().object("p/k"), "s3://b-1.x/p/k");
    }

    #[test]
    fn settings_come_as_aws_tools_read_them() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string())
        };
        let s = S3Settings::from_env(env(&[
            ("AWS_ENDPOINT_URL", "http://127.0.0.1:8333"),
            ("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:9000"),
            ("AWS_DEFAULT_REGION", "eu-west-1"),
            ("AWS_ACCESS_KEY_ID", "K"),
            ("AWS_SECRET_ACCESS_KEY", "S"),
        ]))
        .unwrap();
        assert_eq!(
            (s.endpoint.as_str(), s.region.as_str(), s.path_style),
            ("http://127.0.0.1:9000", "eu-west-1", true)
        );
        let aws = S3Settings::from_env(env(&[
            ("AWS_REGION", "us-west-2"),
            ("AWS_ACCESS_KEY_ID", "K"),
            ("AWS_SECRET_ACCESS_KEY", "S"),
        ]))
        .unwrap();
        assert_eq!((aws.endpoint.as_str(), aws.path_style), ("https://s3.us-west-2.amazonaws.com", false));
        assert!(matches!(
            S3Settings::from_env(env(&[("AWS_CONFIG_FILE", "/nonexistent")])),
            Err(S3Error::NoCredentials)
        ));
    }

    #[test]
    fn paced_reads_keep_to_their_rate() {
        let mut paced = Paced { inner: std::io::repeat(7), rate: 1 << 20, sent: 0, started: std::time::Instant::now() };
        let mut buf = vec![0u8; 64 << 10];
        let started = std::time::Instant::now();
        let mut total = 0;
        while total < (1 << 20) + (64 << 10) {
            total += paced.read(&mut buf).unwrap();
        }
        let took = started.elapsed().as_secs_f64();
        assert!((0.95..1.5).contains(&took), "1 MiB at 1 MiB/s took {took:.2} s");
    }

    #[test]
    fn checksums_are_sha256_in_base64() {
        let path = std::env::temp_dir().join(format!("autodump-sha-{}", std::process::id()));
        std::fs::write(&path, b"hello").unwrap();
        // sha256("hello"), as `openssl dgst -sha256 -binary | base64` prints it.
        assert_eq!(sha256_base64(&path).unwrap(), "LPJNul+wow4m6DsqxbninhsWHlwfp0JecwQzYpOLmCQ=");
        std::fs::remove_file(path).unwrap();
    }
}
