//! Reading a bundle the agent wrote.

use std::path::{Path, PathBuf};

/// A bundle directory.
pub struct Bundle {
    pub dir: PathBuf,
}

/// One folded line: frames root first (the thread name first), and its weight.
#[derive(Debug, Clone)]
pub struct Folded {
    pub frames: Vec<String>,
    pub weight: u64,
}

impl Bundle {
    pub fn open(dir: &Path) -> Self {
        assert!(dir.is_dir(), "bundle {} is not a directory", dir.display());
        Self { dir: dir.to_path_buf() }
    }

    pub fn read(&self, file: &str) -> String {
        std::fs::read_to_string(self.dir.join(file)).unwrap_or_else(|e| panic!("read {file}: {e}"))
    }

    pub fn summary(&self) -> serde_json::Value {
        serde_json::from_str(&self.read("summary.json")).expect("summary.json is JSON")
    }

    /// `cpu.folded` or `offcpu.folded`, parsed.
    pub fn folded(&self, file: &str) -> Vec<Folded> {
        self.read(file)
            .lines()
            .map(|line| {
                let (stack, weight) = line.rsplit_once(' ').unwrap_or_else(|| panic!("bad folded line {line:?}"));
                Folded {
                    frames: stack.split(';').map(str::to_string).collect(),
                    weight: weight.parse().unwrap_or_else(|_| panic!("bad weight in {line:?}")),
                }
            })
            .collect()
    }

    /// Total weight of the stacks of `file` that satisfy `pred`.
    pub fn weight(&self, file: &str, pred: impl Fn(&Folded) -> bool) -> u64 {
        self.folded(file).iter().filter(|f| pred(f)).map(|f| f.weight).sum()
    }

    /// Total weight of stacks of thread `thread` that pass through `function`.
    pub fn weight_in(&self, file: &str, thread: &str, function: &str) -> u64 {
        self.weight(file, |f| f.frames[0] == thread && f.frames.iter().any(|x| x == function))
    }

    /// Parses `file` as XML; panics at the first error.
    pub fn assert_well_formed_xml(&self, file: &str) {
        let text = self.read(file);
        let mut reader = quick_xml::Reader::from_str(&text);
        let mut elements = 0;
        loop {
            match reader.read_event() {
                Ok(quick_xml::events::Event::Eof) => break,
                Ok(quick_xml::events::Event::Start(_) | quick_xml::events::Event::Empty(_)) => elements += 1,
                Ok(_) => {}
                Err(e) => panic!("{file} is not well-formed XML at {}: {e}", reader.buffer_position()),
            }
        }
        assert!(elements > 3, "{file} is nearly empty");
    }

    /// Window length from summary.json, in seconds.
    pub fn window_seconds(&self) -> f64 {
        self.summary()["window"]["duration_s"].as_f64().expect("window.duration_s")
    }
}
