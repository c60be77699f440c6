//! A method's parameters from its JVM descriptor, as Java writes them: `(I[JLjava/lang/String;)V`
//! is `int, long[], java.lang.String`. The descriptor comes from the JVM's memory: anything that
//! is not a descriptor gives None.

/// Longest descriptor decoded (the JVM's limit is 255 parameters).
const MAX_DESCRIPTOR: usize = 4096;

pub fn parameters(descriptor: &str) -> Option<String> {
    if descriptor.len() > MAX_DESCRIPTOR {
        return None;
    }
    let inside = descriptor.strip_prefix('(')?.split_once(')')?.0;
    let mut out = Vec::new();
    let mut rest = inside;
    while !rest.is_empty() {
        let dims = rest.len() - rest.trim_start_matches('[').len();
        rest = &rest[dims..];
        let (name, after) = match rest.as_bytes().first()? {
            b'L' => {
                let (class, after) = rest[1..].split_once(';')?;
                (class.replace('/', "."), after)
            }
            &b => (primitive(b)?.to_string(), &rest[1..]),
        };
        out.push(format!("{name}{}", "[]".repeat(dims)));
        rest = after;
    }
    Some(out.join(", "))
}

fn primitive(code: u8) -> Option<&'static str> {
    Some(match code {
        b'B' => "byte",
        b'C' => "char",
        b'D' => "double",
        b'F' => "float",
        b'I' => "int",
        b'J' => "long",
        b'S' => "short",
        b'Z' => "boolean",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::parameters;

    #[test]
    fn descriptors_read_as_java_writes_parameters() {
        assert_eq!(parameters("(I)J").as_deref(), Some("int"));
        assert_eq!(parameters("()V").as_deref(), Some(""));
        assert_eq!(
            parameters("([[BLjava/lang/String;[Ljava/util/Map;Z)V").as_deref(),
            Some("byte[][], java.lang.String, java.util.Map[], boolean")
        );
    }

    #[test]
    fn what_is_not_a_descriptor_gives_none() {
        for bad in ["", "I", "(", "(Q)V", "(Ljava/lang/String", "([)V"] {
            assert_eq!(parameters(bad), None, "{bad:?}");
        }
    }
}
