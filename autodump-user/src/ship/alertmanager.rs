//! Prometheus Alertmanager's API v2, the two calls the agent makes: post alerts
//! (`POST /api/v2/alerts`) and list the firing ones (`GET /api/v2/alerts`).

use std::{collections::BTreeMap, io::Read, time::Duration};

use serde::{Deserialize, Serialize};

/// One call may take this long; a slow Alertmanager is retried, never waited on.
const TIMEOUT: Duration = Duration::from_secs(10);
/// A list of alerts longer than this is not read (thousands of alerts are a few MB).
const MAX_LIST_BYTES: u64 = 32 << 20;

/// An alert as posted.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PostedAlert {
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    /// RFC 3339.
    pub starts_at: String,
    pub ends_at: String,
    #[serde(rename = "generatorURL", skip_serializing_if = "String::is_empty")]
    pub generator_url: String,
}

/// An alert as listed.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListedAlert {
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub starts_at: String,
    #[serde(default)]
    pub fingerprint: String,
    #[serde(default)]
    pub status: AlertStatus,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct AlertStatus {
    /// `active`, `suppressed` or `unprocessed`.
    #[serde(default)]
    pub state: String,
}

#[derive(Debug, thiserror::Error)]
pub enum AlertmanagerError {
    #[error("{url}: {source}")]
    Unreachable { url: String, source: Box<ureq::Error> },
    #[error("{url}: HTTP {status}: {body}")]
    Refused { url: String, status: u16, body: String },
    #[error("{url}: the alert list does not parse: {why}")]
    Garbled { url: String, why: String },
}

/// An Alertmanager at `base` (`http://host:9093`).
#[derive(Clone)]
pub struct Alertmanager {
    base: String,
    agent: ureq::Agent,
}

impl Alertmanager {
    pub fn new(base: &str) -> Self {
        let config = ureq::Agent::config_builder().timeout_global(Some(TIMEOUT)).http_status_as_error(false).build();
        Self { base: base.trim_end_matches('/').to_string(), agent: config.into() }
    }

    pub fn url(&self) -> &str {
        &self.base
    }

    pub fn post(&self, alerts: &[PostedAlert]) -> Result<(), AlertmanagerError> {
        let url = format!("{}/api/v2/alerts", self.base);
        let body = serde_json::to_vec(alerts).expect("alerts serialize");
        let response = self
            .agent
            .post(&url)
            .header("Content-Type", "application/json")
            .send(&body[..])
            .map_err(|e| AlertmanagerError::Unreachable { url: url.clone(), source: Box::new(e) })?;
        check(&url, response).map(drop)
    }

    /// The alerts that fire now: active, neither silenced nor inhibited.
    pub fn firing(&self) -> Result<Vec<ListedAlert>, AlertmanagerError> {
        let url = format!("{}/api/v2/alerts?active=true&silenced=false&inhibited=false", self.base);
        let response = self
            .agent
            .get(&url)
            .call()
            .map_err(|e| AlertmanagerError::Unreachable { url: url.clone(), source: Box::new(e) })?;
        let mut response = check(&url, response)?;
        let mut text = Vec::new();
        let read = response.body_mut().with_config().limit(MAX_LIST_BYTES).reader().read_to_end(&mut text);
        read.map_err(|e| AlertmanagerError::Garbled { url: url.clone(), why: e.to_string() })?;
        parse_list(&text).map_err(|why| AlertmanagerError::Garbled { url, why })
    }
}

/// Alertmanager's alert list; alerts that are not active are left out.
pub fn parse_list(json: &[u8]) -> Result<Vec<ListedAlert>, String> {
    let alerts: Vec<ListedAlert> = serde_json::from_slice(json).map_err(|e| e.to_string())?;
    Ok(alerts.into_iter().filter(|a| a.status.state == "active" || a.status.state.is_empty()).collect())
}

fn check(
    url: &str,
    mut response: ureq::http::Response<ureq::Body>,
) -> Result<ureq::http::Response<ureq::Body>, AlertmanagerError> {
    let status = response.status().as_u16();
    if (200..300).contains(&status) {
        return Ok(response);
    }
    let body = response.body_mut().with_config().limit(4096).read_to_string().unwrap_or_default();
    Err(AlertmanagerError::Refused { url: url.to_string(), status, body: body.trim().to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alerts_post_and_list_in_the_api_v2_shape() {
        let alert = PostedAlert {
            labels: [("alertname".to_string(), "AutodumpIncident".to_string())].into(),
            annotations: [("summary".to_string(), "cpu 93%".to_string())].into(),
            starts_at: "2026-12-04T10:00:00Z".into(),
            ends_at: "2026-12-04T10:10:00Z".into(),
            generator_url: String::new(),
        };
        let json = serde_json::to_string(&[alert]).unwrap();
        assert_eq!(
            json,
            r#"[{"labels":{"alertname":"AutodumpIncident"},"annotations":{"summary":"cpu 93%"},"startsAt":"2026-12-04T10:00:00Z","endsAt":"2026-12-04T10:10:00Z"}]"#
        );
        let listed = br#"[{"labels":{"alertname":"HighLatency"},"startsAt":"2026-12-04T10:00:00.5Z","fingerprint":"ab","status":{"state":"active"}},
                          {"labels":{"alertname":"Quiet"},"status":{"state":"suppressed"}}]"#;
        let alerts = parse_list(listed).unwrap();
        assert_eq!(alerts.len(), 1);
        assert_eq!((alerts[0].labels["alertname"].as_str(), alerts[0].fingerprint.as_str()), ("HighLatency", "ab"));
        assert!(parse_list(b"{not a list").is_err());
    }
}
