//! The rule set of watch mode: each metric's default, then the `--config` file, then the
//! `--rule` flags, each overriding the one before for the metrics it names.

use std::{collections::BTreeMap, path::Path};

use serde::Deserialize;

use crate::{
    cli::RuleSpec,
    collect::metrics::Metric,
    error::{AgentError, ExitCode},
    trigger::rule::Rule,
};

/// The TOML file: `[rules]` maps a metric to its settings, e.g. `cpu = "min=10%,abs=80%"`
/// or `fds = "off"`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    #[serde(default)]
    rules: BTreeMap<String, String>,
}

pub fn rules(config: Option<&Path>, flags: &[RuleSpec]) -> Result<BTreeMap<Metric, Rule>, AgentError> {
    let mut set: BTreeMap<Metric, Option<Rule>> = Rule::defaults().into_iter().map(|r| (r.metric, Some(r))).collect();
    if let Some(path) = config {
        let usage = |why: String| AgentError::new(ExitCode::Usage, format!("config {}: {why}", path.display()));
        let text = std::fs::read_to_string(path).map_err(|e| usage(e.to_string()))?;
        for (metric, rule) in parse_file(&text).map_err(usage)? {
            set.insert(metric, rule);
        }
    }
    for (metric, rule) in flags {
        set.insert(*metric, rule.clone());
    }
    Ok(set.into_iter().filter_map(|(m, r)| Some((m, r?))).collect())
}

pub fn parse_file(text: &str) -> Result<Vec<RuleSpec>, String> {
    let file: ConfigFile = toml::from_str(text).map_err(|e| e.message().to_string())?;
    file.rules
        .iter()
        .map(|(metric, settings)| Rule::parse_spec(&format!("{metric}:{settings}")).map_err(|e| e.to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_file_overrides_defaults() {
        let dir = std::env::temp_dir().join(format!("autodump-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("rules.toml");
        std::fs::write(&path, "[rules]\ncpu = \"min=5%,abs=50%\"\nfds = \"off\"\nthreads = \"abs=200\"\n").unwrap();
        let flags = vec![Rule::parse_spec("threads:abs=300").unwrap()];
        let set = rules(Some(&path), &flags).unwrap();
        assert_eq!(set[&Metric::Cpu].to_string(), "cpu:min=5%,diff=25%,abs=50%");
        assert!(!set.contains_key(&Metric::Fds), "turned off in the file");
        assert_eq!(set[&Metric::Threads].to_string(), "threads:min=50,diff=50%,abs=300");
        assert_eq!(set[&Metric::Rss], Rule::default_for(Metric::Rss));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn bad_files_are_usage_errors() {
        assert!(parse_file("[rules]\ndisk = \"min=1\"\n").unwrap_err().contains("unknown metric"));
        assert!(parse_file("[other]\n").is_err(), "unknown tables are rejected");
        assert!(parse_file("not toml [").is_err());
        let err = rules(Some(Path::new("/nonexistent/rules.toml")), &[]).unwrap_err();
        assert_eq!(err.code, ExitCode::Usage);
    }
}
