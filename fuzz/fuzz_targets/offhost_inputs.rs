//! What comes from off the host or from an operator for it: `--alert-trigger` matchers (and
//! matching labels against them), the AWS shared credentials file, Alertmanager's alert list,
//! and `s3://` URLs.
#![no_main]

use std::collections::BTreeMap;

use autodump::ship::{alertmanager::parse_list, credentials, matchers::Matchers, s3::S3Url};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(m) = Matchers::parse(&text) {
        let labels: BTreeMap<String, String> =
            text.split(',').filter_map(|kv| kv.split_once('=')).map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let _ = m.matches(&labels);
    }
    let _ = credentials::parse(&text, "default");
    let _ = parse_list(data);
    let _ = S3Url::parse(&text);
});
