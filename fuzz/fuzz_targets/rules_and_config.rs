//! The rule syntax (`--rule cpu:min=10%,diff=25%,abs=80%`), sizes and durations of flags, and
//! the TOML config file.
#![no_main]

use autodump::{
    config::parse_file,
    runtimes,
    trigger::rule::Rule,
    units::{parse_duration, parse_size},
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let runtime: Vec<_> = runtimes::metrics().collect();
    let _ = Rule::parse_spec(&text, &runtime);
    let _ = Rule::parse(&text, &runtime);
    let _ = parse_size(&text);
    let _ = parse_duration(&text);
    let _ = parse_file(&text);
});
