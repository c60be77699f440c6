//! Writing BENCHMARKS.md: a run of every row writes the whole file; a run of some rows
//! (`--rows`) puts each of its sections in place of the same row's in the file there, and keeps
//! the others.

/// The row number of a section heading (`## 10. Many processes`).
fn row_of(line: &str) -> Option<u8> {
    line.strip_prefix("## ")?.split_once('.')?.0.parse().ok()
}

/// `existing` with each `(row, section)` of `measured` in place of that row's section (a heading
/// to the next heading), or inserted before the first later row, or at the end.
pub fn splice(existing: &str, measured: &[(u8, String)]) -> String {
    // The file as (row, text) pieces: the header's row is 0.
    let mut pieces: Vec<(u8, String)> = vec![(0, String::new())];
    for line in existing.split_inclusive('\n') {
        if let Some(row) = row_of(line) {
            pieces.push((row, String::new()));
        }
        pieces.last_mut().expect("the header").1.push_str(line);
    }
    for (row, section) in measured {
        match pieces.iter().position(|(r, _)| r == row) {
            Some(at) => pieces[at].1 = section.clone(),
            None => {
                let at = pieces.iter().position(|(r, _)| r > row).unwrap_or(pieces.len());
                pieces.insert(at, (*row, section.clone()));
            }
        }
    }
    pieces.into_iter().map(|(_, text)| text).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_row_run_replaces_its_section_and_keeps_the_others() {
        let file = "# Benchmarks\n\nheader\n\n## 1. One\n\nold one\n\n## 3. Three\n\nthree\n";
        let measured = [(1, "## 1. One\n\nnew one\n\n".to_string()), (2, "## 2. Two\n\ntwo\n\n".to_string())];
        assert_eq!(
            splice(file, &measured),
            "# Benchmarks\n\nheader\n\n## 1. One\n\nnew one\n\n## 2. Two\n\ntwo\n\n## 3. Three\n\nthree\n"
        );
        assert_eq!(splice("# B\n", &[(4, "## 4. Four\n".into())]), "# B\n## 4. Four\n");
        assert_eq!(row_of("## 12. Goroutine snapshots"), Some(12));
        assert_eq!(row_of("## Notes"), None);
    }
}
