//! What watch mode watches, and with which rules: the command line's target and those of the
//! `--config` file. A target's rules are each metric's default, then the file's `[rules]`, then
//! the target's own `rules`, then the `--rule` flags, each overriding the one before for the
//! metrics it names.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use serde::Deserialize;

use crate::{
    cli::{Cli, RuleSpec},
    collect::metrics::Metric,
    error::{AgentError, ExitCode},
    select::Selector,
    ship::{matchers::Matchers, s3::S3Url},
    trigger::rule::Rule,
};

/// The TOML file: `[rules]` maps a metric to its settings, e.g. `cpu = "min=10%,abs=80%"`
/// or `fds = "off"`, for every target; each `[[target]]` names one selector and may set its own
/// `out` and `rules`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    #[serde(default)]
    rules: BTreeMap<String, String>,
    /// Every target's bundles go to this store (s3://BUCKET/PREFIX), unless a target says.
    upload: Option<String>,
    #[serde(default, rename = "target")]
    targets: Vec<TargetEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TargetEntry {
    name: String,
    pid: Option<u32>,
    exe: Option<PathBuf>,
    comm: Option<String>,
    cgroup: Option<String>,
    unit: Option<String>,
    /// Every process of the host.
    #[serde(default)]
    all: bool,
    /// This target's bundles go to this store (s3://BUCKET/PREFIX).
    upload: Option<String>,
    /// Alertmanager alerts matching any of these write this target's bundles.
    #[serde(default)]
    alert_trigger: Vec<String>,
    /// Where this target's bundles go (default: `--out`).
    out: Option<PathBuf>,
    #[serde(default)]
    rules: BTreeMap<String, String>,
}

/// One target, ready to watch.
#[derive(Clone, Debug, PartialEq)]
pub struct TargetConfig {
    pub name: String,
    pub selector: Selector,
    pub out: PathBuf,
    pub rules: BTreeMap<Metric, Rule>,
    /// Where its bundles are uploaded: its own `upload`, else the file's, else `--upload`.
    pub upload: Option<S3Url>,
    /// Alerts that write its bundles (`alert_trigger`, or `--alert-trigger` for the command
    /// line's target).
    pub alert_triggers: Vec<Matchers>,
}

/// Every target: the command line's (if it names one), then the config file's.
pub fn targets(cli: &Cli) -> Result<Vec<TargetConfig>, AgentError> {
    let usage = |why: String| AgentError::new(ExitCode::Usage, why);
    let (file_rules, file_upload, entries) = match cli.config.as_deref() {
        Some(path) => read_file(path)?,
        None => (Vec::new(), None, Vec::new()),
    };
    let upload = file_upload.or_else(|| cli.upload.clone());
    let rules = |own: &[RuleSpec]| {
        let mut set: BTreeMap<Metric, Option<Rule>> =
            Rule::defaults(&runtime_metrics()).into_iter().map(|r| (r.metric, Some(r))).collect();
        for (metric, rule) in file_rules.iter().chain(own).chain(&cli.rules) {
            set.insert(*metric, rule.clone());
        }
        set.into_iter().filter_map(|(m, r)| Some((m, r?))).collect::<BTreeMap<_, _>>()
    };
    let mut targets = Vec::new();
    if let Some(selector) = cli.selector() {
        targets.push(TargetConfig {
            name: selector.describe(),
            selector,
            out: cli.out.clone(),
            rules: rules(&[]),
            upload: cli.upload.clone(),
            alert_triggers: cli.alert_trigger.clone(),
        });
    }
    for (entry, own) in entries {
        if targets.iter().any(|t: &TargetConfig| t.name == entry.name) {
            return Err(usage(format!("config: two targets are named '{}'", entry.name)));
        }
        let selector = entry.selector()?;
        let config_err = |e: String| usage(format!("config: target '{}': {e}", entry.name));
        let own_upload = entry.upload.as_deref().map(S3Url::parse).transpose().map_err(config_err)?;
        let alert_triggers = entry
            .alert_trigger
            .iter()
            .map(|m| Matchers::parse(m))
            .collect::<Result<Vec<_>, _>>()
            .map_err(config_err)?;
        targets.push(TargetConfig {
            selector,
            out: entry.out.clone().unwrap_or_else(|| cli.out.clone()),
            rules: rules(&own),
            upload: own_upload.or_else(|| upload.clone()),
            alert_triggers,
            name: entry.name,
        });
    }
    if targets.is_empty() {
        return Err(usage(
            "nothing to watch: give --pid, --exe, --comm, --cgroup, --unit or --all, or targets in --config".into(),
        ));
    }
    Ok(targets)
}

impl TargetEntry {
    fn selector(&self) -> Result<Selector, AgentError> {
        let mut found: Vec<Selector> = Vec::new();
        found.extend(self.pid.map(Selector::Pid));
        found.extend(self.exe.clone().map(Selector::Exe));
        found.extend(self.comm.clone().map(Selector::Comm));
        found.extend(self.cgroup.clone().map(Selector::Cgroup));
        found.extend(self.unit.clone().map(Selector::Unit));
        found.extend(self.all.then_some(Selector::All));
        match found.len() {
            1 => Ok(found.remove(0)),
            n => Err(AgentError::new(
                ExitCode::Usage,
                format!(
                    "config: target '{}' has {}: give exactly one of pid, exe, comm, cgroup, unit or all = true",
                    self.name,
                    if n == 0 { "no selector".to_string() } else { format!("{n} selectors") }
                ),
            )),
        }
    }
}

/// The file's shared rules and store, and its targets with their own rules.
type FileContents = (Vec<RuleSpec>, Option<S3Url>, Vec<(TargetEntry, Vec<RuleSpec>)>);

fn read_file(path: &Path) -> Result<FileContents, AgentError> {
    let usage = |why: String| AgentError::new(ExitCode::Usage, format!("config {}: {why}", path.display()));
    let text = std::fs::read_to_string(path).map_err(|e| usage(e.to_string()))?;
    parse(&text).map_err(usage)
}

fn parse(text: &str) -> Result<FileContents, String> {
    let file: ConfigFile = toml::from_str(text).map_err(|e| e.message().to_string())?;
    let rules = parse_rules(&file.rules)?;
    let upload = file.upload.as_deref().map(S3Url::parse).transpose()?;
    let targets = file
        .targets
        .into_iter()
        .map(|t| parse_rules(&t.rules).map(|r| (t, r)).map_err(|e| format!("target: {e}")))
        .collect::<Result<_, _>>()?;
    Ok((rules, upload, targets))
}

/// The metrics the runtimes add, which rules may name.
fn runtime_metrics() -> Vec<&'static crate::collect::metrics::RuntimeMetric> {
    crate::runtimes::metrics().collect()
}

fn parse_rules(table: &BTreeMap<String, String>) -> Result<Vec<RuleSpec>, String> {
    table
        .iter()
        .map(|(metric, settings)| {
            Rule::parse_spec(&format!("{metric}:{settings}"), &runtime_metrics()).map_err(|e| e.to_string())
        })
        .collect()
}

/// Checks a config file's text (the fuzz target's entry).
pub fn parse_file(text: &str) -> Result<usize, String> {
    parse(text).map(|(rules, _, targets)| rules.len() + targets.len())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    fn cli(args: &[&str]) -> Cli {
        Cli::try_parse_from(std::iter::once("autodump-agent").chain(args.iter().copied())).unwrap()
    }

    fn with_file(name: &str, text: &str, args: &[&str]) -> Result<Vec<TargetConfig>, AgentError> {
        let dir = std::env::temp_dir().join(format!("autodump-config-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("config.toml");
        std::fs::write(&path, text).unwrap();
        let mut all = vec!["--config", path.to_str().unwrap()];
        all.extend_from_slice(args);
        let result = targets(&cli(&all));
        std::fs::remove_dir_all(&dir).unwrap();
        result
    }

    #[test]
    fn flags_override_targets_override_file_overrides_defaults() {
        let text = "[rules]\ncpu = \"min=5%,abs=50%\"\nfds = \"off\"\nthreads = \"abs=200\"\n\n\
                    [[target]]\nname = \"api\"\nexe = \"/usr/bin/api\"\nout = \"/var/lib/autodump/api\"\n\
                    [target.rules]\nthreads = \"abs=250\"\nrss = \"abs=1GiB,for=1m\"\n";
        let set = with_file("layers", text, &["--pid", "7", "--rule", "threads:abs=300"]).unwrap();
        assert_eq!(set.len(), 2, "the command line's target and the file's");
        assert_eq!((set[0].name.as_str(), &set[0].selector), ("pid:7", &Selector::Pid(7)));
        let api = &set[1];
        assert_eq!(api.selector, Selector::Exe("/usr/bin/api".into()));
        assert_eq!(api.out, PathBuf::from("/var/lib/autodump/api"));
        assert_eq!(api.rules[&Metric::Cpu].to_string(), "cpu:min=5%,diff=25%,abs=50%");
        assert!(!api.rules.contains_key(&Metric::Fds), "turned off in the file");
        assert_eq!(api.rules[&Metric::Threads].to_string(), "threads:min=50,diff=50%,abs=300", "the flag wins");
        assert_eq!(api.rules[&Metric::Rss].to_string(), "rss:min=30%,diff=25%,abs=1024MiB,for=1m");
        assert_eq!(set[0].rules[&Metric::Rss], Rule::default_for(Metric::Rss));
    }

    #[test]
    fn bad_files_are_usage_errors_naming_the_culprit() {
        for (text, says) in [
            ("[rules]\ndisk = \"min=1\"\n", "unknown metric"),
            ("[other]\n", "unknown field `other`"),
            ("not toml [", ""),
            ("[[target]]\nname = \"db\"\nexe = \"/x\"\ncolour = \"red\"\n", "unknown field `colour`"),
            ("[[target]]\nname = \"db\"\n", "target 'db' has no selector"),
            ("[[target]]\nname = \"db\"\npid = 1\ncomm = \"x\"\n", "target 'db' has 2 selectors"),
            ("[[target]]\nname = \"a\"\npid = 1\n[[target]]\nname = \"a\"\npid = 2\n", "two targets are named 'a'"),
            ("", "nothing to watch"),
        ] {
            let err = with_file("bad", text, &[]).unwrap_err();
            assert_eq!(err.code, ExitCode::Usage, "{text}");
            assert!(err.to_string().contains(says), "{text}: {err}");
        }
        let err = targets(&cli(&["--config", "/nonexistent/config.toml"])).unwrap_err();
        assert_eq!(err.code, ExitCode::Usage);
    }
}
