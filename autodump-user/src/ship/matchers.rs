//! Alertmanager's matcher syntax, for `--alert-trigger`: `alertname="HighLatency",service=~"api|web"`,
//! optionally in braces; each matcher is a label name, `=`, `!=`, `=~` or `!~`, and a value,
//! double-quoted (with `\"`, `\\` and `\n` escapes) or bare. Regular expressions are anchored,
//! as Alertmanager anchors them. Hand-written (no crate parses this syntax alone): fuzzed.

use std::collections::BTreeMap;

/// Labels longer than this, or more matchers than `MAX_MATCHERS`, are refused: a matcher set is
/// typed by a person.
const MAX_VALUE: usize = 1024;
const MAX_MATCHERS: usize = 64;

#[derive(Clone, Debug)]
enum Op {
    Equal(String),
    NotEqual(String),
    Regex(regex::Regex),
    NotRegex(regex::Regex),
}

#[derive(Clone, Debug)]
pub struct Matcher {
    name: String,
    op: Op,
}

/// Every matcher must hold.
#[derive(Clone, Debug)]
pub struct Matchers {
    text: String,
    matchers: Vec<Matcher>,
}

impl PartialEq for Matchers {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl std::fmt::Display for Matchers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

impl Matchers {
    pub fn parse(text: &str) -> Result<Self, String> {
        let err = |why: &str| format!("alert matchers '{text}': {why}");
        let inner = text.trim();
        let inner = match inner.strip_prefix('{') {
            Some(rest) => rest.strip_suffix('}').ok_or_else(|| err("'{' without '}'"))?,
            None => inner,
        };
        let mut matchers = Vec::new();
        let mut rest = inner.trim_start();
        while !rest.is_empty() {
            if matchers.len() == MAX_MATCHERS {
                return Err(err("too many matchers"));
            }
            let name_len = rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(rest.len());
            let name = &rest[..name_len];
            if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
                return Err(err("a matcher must start with a label name"));
            }
            rest = rest[name_len..].trim_start();
            let (op, after) = ["=~", "!~", "!=", "="]
                .iter()
                .find_map(|op| rest.strip_prefix(op).map(|r| (*op, r)))
                .ok_or_else(|| err(&format!("'{name}' needs =, !=, =~ or !~")))?;
            let (value, after) = value(after.trim_start()).map_err(|why| err(&why))?;
            let regex = || {
                regex::Regex::new(&format!("^(?:{value})$")).map_err(|e| err(&format!("bad regular expression: {e}")))
            };
            let op = match op {
                "=" => Op::Equal(value),
                "!=" => Op::NotEqual(value),
                "=~" => Op::Regex(regex()?),
                _ => Op::NotRegex(regex()?),
            };
            matchers.push(Matcher { name: name.to_string(), op });
            rest = after.trim_start();
            match rest.strip_prefix(',') {
                Some(r) => rest = r.trim_start(),
                None if rest.is_empty() => {}
                None => return Err(err("matchers are separated by ','")),
            }
        }
        if matchers.is_empty() {
            return Err(err("no matcher"));
        }
        Ok(Self { text: text.trim().to_string(), matchers })
    }

    /// Whether `labels` satisfy every matcher (a missing label is the empty string, as in
    /// Alertmanager).
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.matchers.iter().all(|m| {
            let v = labels.get(&m.name).map_or("", String::as_str);
            match &m.op {
                Op::Equal(want) => v == want,
                Op::NotEqual(want) => v != want,
                Op::Regex(re) => re.is_match(v),
                Op::NotRegex(re) => !re.is_match(v),
            }
        })
    }
}

/// A quoted or bare value at the start of `text`, and what follows it.
fn value(text: &str) -> Result<(String, &str), String> {
    let Some(quoted) = text.strip_prefix('"') else {
        let end = text.find([',', '}']).unwrap_or(text.len());
        let bare = text[..end].trim();
        return match bare.contains(['"', '=', '!', '~']) {
            true => Err(format!("bad value '{bare}'")),
            false => Ok((bare.to_string(), &text[end..])),
        };
    };
    let mut out = String::new();
    let mut chars = quoted.char_indices();
    while let Some((i, c)) = chars.next() {
        if out.len() > MAX_VALUE {
            return Err("value too long".into());
        }
        match c {
            '"' => return Ok((out, &quoted[i + 1..])),
            '\\' => match chars.next() {
                Some((_, 'n')) => out.push('\n'),
                Some((_, c @ ('"' | '\\'))) => out.push(c),
                _ => return Err("bad escape in a quoted value".into()),
            },
            c => out.push(c),
        }
    }
    Err("unterminated quoted value".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn matches_as_alertmanager_does() {
        let m = Matchers::parse(r#"{alertname="HighLatency", service=~"api|web", env!="dev", team!~"x.*"}"#).unwrap();
        let api = labels(&[("alertname", "HighLatency"), ("service", "api"), ("env", "prod")]);
        assert!(m.matches(&api));
        assert!(!m.matches(&labels(&[("alertname", "HighLatency"), ("service", "apis")])), "anchored");
        assert!(!m.matches(&labels(&[("alertname", "HighLatency"), ("service", "web"), ("env", "dev")])));
        assert!(!m.matches(&labels(&[("alertname", "HighLatency"), ("service", "web"), ("team", "xy")])));
        let bare = Matchers::parse("alertname=Disk,severity=page").unwrap();
        assert!(bare.matches(&labels(&[("alertname", "Disk"), ("severity", "page")])));
        let escaped = Matchers::parse(r#"msg="say \"hi\"\\""#).unwrap();
        assert!(escaped.matches(&labels(&[("msg", "say \"hi\"\\")])));
        assert_eq!(bare.to_string(), "alertname=Disk,severity=page");
    }

    #[test]
    fn bad_matchers_are_told() {
        for (text, says) in [
            ("", "no matcher"),
            ("{alertname=\"x\"", "without '}'"),
            ("alertname", "needs ="),
            ("=x", "label name"),
            ("a=\"x", "unterminated"),
            ("a=~\"(\"", "regular expression"),
            ("a=\"x\" b=\"y\"", "separated by ','"),
            ("a=\"\\q\"", "bad escape"),
        ] {
            let err = Matchers::parse(text).unwrap_err();
            assert!(err.contains(says), "{text}: {err}");
        }
    }
}
