//! The AWS shared credentials file (`~/.aws/credentials`, or `AWS_SHARED_CREDENTIALS_FILE`): the
//! keys of the profile `AWS_PROFILE` (default `default`). Read with `rust-ini`, bounded in size.

use std::io::Read;

use rusty_s3::Credentials;

/// A credentials file larger than this is not read (it holds a few profiles).
const MAX_BYTES: u64 = 1 << 20;

/// The profile's keys, if the file has them.
pub fn from_file(env: &dyn Fn(&str) -> Option<String>) -> Option<Credentials> {
    let path = env("AWS_SHARED_CREDENTIALS_FILE").or_else(|| env("HOME").map(|h| format!("{h}/.aws/credentials")))?;
    let mut text = String::new();
    std::fs::File::open(&path).ok()?.take(MAX_BYTES).read_to_string(&mut text).ok()?;
    parse(&text, &env("AWS_PROFILE").unwrap_or_else(|| "default".into()))
}

/// The keys of `profile` in a credentials file's text.
pub fn parse(text: &str, profile: &str) -> Option<Credentials> {
    let ini = ini::Ini::load_from_str(text).ok()?;
    let section = ini.section(Some(profile))?;
    let key = section.get("aws_access_key_id")?.trim();
    let secret = section.get("aws_secret_access_key")?.trim();
    Some(match section.get("aws_session_token").map(str::trim).filter(|t| !t.is_empty()) {
        Some(token) => Credentials::new_with_token(key, secret, token),
        None => Credentials::new(key, secret),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_named_profile_is_read() {
        let text = "[default]\naws_access_key_id = A\naws_secret_access_key = B\n\n[ops]\naws_access_key_id=C\n\
                    aws_secret_access_key=D\naws_session_token=T\n";
        let ops = parse(text, "ops").unwrap();
        assert_eq!((ops.key(), ops.secret(), ops.token()), ("C", "D", Some("T")));
        assert_eq!(parse(text, "default").unwrap().key(), "A");
        assert!(parse(text, "missing").is_none());
        assert!(parse("[default]\naws_access_key_id = A\n", "default").is_none(), "no secret");
        assert!(parse("garbage [ = ]]", "default").is_none());
    }
}
