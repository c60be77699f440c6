//! Go's own profiles of a live process, from its `/debug/pprof` (the reference the goroutine
//! tests compare with), and the functions their stacks wait in.

use std::collections::HashMap;

/// `GET http://127.0.0.1:PORT/PATH` as text.
pub fn get(port: u16, path: &str) -> String {
    let url = format!("http://127.0.0.1:{port}{path}");
    let mut response = ureq::get(&url).call().unwrap_or_else(|e| panic!("GET {url}: {e}"));
    response.body_mut().with_config().limit(256 << 20).read_to_string().unwrap()
}

/// The function a goroutine waits in, from its stack's names (innermost first): the innermost
/// of the program's own (`main.`, or a package path whose first element has a dot), else the
/// innermost outside the runtime and sync, as a reader of the stack would say it.
pub fn own_function<'a>(names: &[&'a str]) -> &'a str {
    let own = |f: &&&str| f.starts_with("main.") || f.split_once('/').is_some_and(|(first, _)| first.contains('.'));
    let plumbing = |f: &&&str| ["runtime.", "internal/", "sync.", "time.Sleep"].iter().any(|p| f.starts_with(p));
    names.iter().find(own).or_else(|| names.iter().find(|f| !plumbing(f))).or(names.first()).copied().unwrap_or("?")
}

/// One stack of a `debug=1` profile: its weight(s) and its functions, innermost first.
#[derive(Clone, Debug)]
pub struct TextStack {
    pub weight: f64,
    pub count: u64,
    pub functions: Vec<String>,
}

/// Parses Go's `debug=1` text profiles (goroutine: `N @ pcs`; block and mutex: `cycles N @
/// pcs`), keyed by their pc list.
pub fn text_profile(text: &str) -> HashMap<String, TextStack> {
    let mut stacks = HashMap::new();
    let mut current: Option<(String, TextStack)> = None;
    for line in text.lines() {
        if let Some((head, pcs)) = line.split_once(" @ ") {
            if let Some((k, s)) = current.take() {
                stacks.insert(k, s);
            }
            let numbers: Vec<f64> = head.split_whitespace().filter_map(|n| n.parse().ok()).collect();
            let (weight, count) = match numbers[..] {
                [n] => (n, n as u64),
                [cycles, n, ..] => (cycles, n as u64),
                _ => continue,
            };
            current = Some((pcs.to_string(), TextStack { weight, count, functions: Vec::new() }));
        } else if let (Some(frame), Some((_, s))) = (line.strip_prefix("#\t"), current.as_mut()) {
            // `#\t0xpc\tfunction+0xoff\tfile:line`
            if let Some(function) = frame.split('\t').nth(1) {
                let name = function.rsplit_once("+0x").map_or(function, |(n, _)| n);
                s.functions.push(name.to_string());
            }
        }
    }
    if let Some((k, s)) = current {
        stacks.insert(k, s);
    }
    stacks
}

/// Weight by waiting function over the stacks of `after` less those of `before` (Go's block
/// profile counts since the program started).
pub fn delta_by_function(before: &str, after: &str) -> HashMap<String, f64> {
    let before = text_profile(before);
    let mut by = HashMap::new();
    for (k, s) in text_profile(after) {
        let w = s.weight - before.get(&k).map_or(0.0, |b| b.weight);
        let names: Vec<&str> = s.functions.iter().map(|f| f.as_str()).collect();
        *by.entry(own_function(&names).to_string()).or_default() += w;
    }
    by
}

/// Goroutines by waiting function in a `goroutine?debug=1` profile.
pub fn goroutines_by_function(text: &str) -> HashMap<String, u64> {
    let mut by = HashMap::new();
    for s in text_profile(text).values() {
        let names: Vec<&str> = s.functions.iter().map(|f| f.as_str()).collect();
        *by.entry(own_function(&names).to_string()).or_default() += s.count;
    }
    by
}

/// Each goroutine's id, state and whole minutes waited in a `goroutine?debug=2` dump (ours
/// or Go's): `goroutine 7 [chan receive, 5 minutes]:`.
pub fn goroutine_headers(text: &str) -> HashMap<u64, (String, u64)> {
    text.lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("goroutine ")?.strip_suffix("]:")?;
            let (id, state) = rest.split_once(" [")?;
            let mut parts = state.split(", ");
            let state = parts.next()?.to_string();
            let minutes = parts.find_map(|p| p.strip_suffix(" minutes")?.parse().ok()).unwrap_or(0);
            Some((id.parse().ok()?, (state, minutes)))
        })
        .collect()
}

/// Shares (0..1) of a map of weights.
pub fn shares(by: &HashMap<String, f64>) -> HashMap<String, f64> {
    let total: f64 = by.values().filter(|w| **w > 0.0).sum();
    by.iter().map(|(k, w)| (k.clone(), w.max(0.0) / total.max(f64::MIN_POSITIVE))).collect()
}
