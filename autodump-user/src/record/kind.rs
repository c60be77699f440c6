//! The kinds of profile a bundle holds, and the one table that says how each is written: its
//! files, its pprof sample types, the weight of its folded stacks, how its flamegraph is drawn
//! and where `index.html` lists it. Every writer reads this table; a new kind is a new entry,
//! made where the profile is made (a runtime's own kinds live in its folder).

/// A kind of profile: which entry of the table it is. Kinds compare by where bundles list them.
#[derive(Clone, Copy)]
pub struct ProfileKind(&'static KindInfo);

/// Which number of a `SampleValue` a value is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Field {
    Count,
    Nanos,
    /// Nanoseconds, shown in microseconds (rounded).
    Micros,
    Bytes,
    AllocCount,
    AllocBytes,
}

/// How a pprof file states its sampling period.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Period {
    /// One sample every 1/frequency seconds, in nanoseconds.
    SamplingInterval,
    /// One recorded fault stands for `--fault-period` faults.
    FaultPeriod,
    /// The profile says (`Profile::period`): a runtime's own sampling rate, as Go's
    /// `MemProfileRate`.
    OfProfile,
    /// Every event is counted.
    One,
}

pub struct KindInfo {
    /// Where bundles list it: by this, lowest first.
    pub order: u16,
    /// Its name in summaries (`cpu`, `off_cpu`).
    pub name: &'static str,
    /// `<stem>.folded`, `<stem>.svg`, `<stem>.pb.gz`.
    pub stem: &'static str,
    /// Flamegraph title, before the process: "on-CPU app (pid 1)".
    pub title: &'static str,
    /// The heading `index.html` shows the flamegraph under.
    pub heading: &'static str,
    /// pprof sample types, (type, unit, which number).
    pub values: &'static [(&'static str, &'static str, Field)],
    /// The pprof period's type is `values[0]`'s type with this unit, and its size is this.
    pub period: (&'static str, &'static str, Period),
    /// What folded stacks and the flamegraph weigh each stack by, and the flamegraph's unit.
    pub weight: (Field, &'static str),
    /// inferno's palette name.
    pub palette: &'static str,
    /// The pprof label that carries each stack's root (the thread's name, the goroutine's state).
    pub root_label: &'static str,
    /// Shown first in a bundle written for memory.
    pub memory: bool,
}

impl ProfileKind {
    /// On-CPU samples from the cpu-clock sampler.
    pub const CPU: ProfileKind = ProfileKind(&KindInfo {
        order: 0,
        name: "cpu",
        stem: "cpu",
        title: "on-CPU",
        heading: "On-CPU",
        values: &[("samples", "count", Field::Count), ("cpu", "nanoseconds", Field::Nanos)],
        period: ("cpu", "nanoseconds", Period::SamplingInterval),
        weight: (Field::Count, "samples"),
        palette: "hot",
        root_label: "thread",
        memory: false,
    });
    /// Time blocked (or waiting for a CPU), from sched_switch.
    pub const OFF_CPU: ProfileKind = ProfileKind(&KindInfo {
        order: 20,
        name: "off_cpu",
        stem: "offcpu",
        title: "off-CPU",
        heading: "Off-CPU (where threads block)",
        values: &[("samples", "count", Field::Count), ("off_cpu", "nanoseconds", Field::Nanos)],
        period: ("off_cpu", "nanoseconds", Period::One),
        weight: (Field::Micros, "us"),
        palette: "blue",
        root_label: "thread",
        memory: false,
    });
    /// Time blocked until woken, by blocked stack and then the waker's stack (wake-up probe).
    pub const WAKEUPS: ProfileKind = ProfileKind(&KindInfo {
        order: 25,
        name: "wakeups",
        stem: "wakeups",
        title: "wake-ups (blocked stack, --, waker) of",
        heading: "Wake-ups (blocked stack below --, the stack that woke it above, leaf first)",
        values: &[("wakeups", "count", Field::Count), ("blocked", "nanoseconds", Field::Nanos)],
        period: ("blocked", "nanoseconds", Period::One),
        weight: (Field::Micros, "us"),
        palette: "wakeup",
        root_label: "thread",
        memory: false,
    });
    /// Page faults: where the process first touched memory, so where its resident size grew.
    pub const FAULTS: ProfileKind = ProfileKind(&KindInfo {
        order: 30,
        name: "faults",
        stem: "faults",
        title: "page faults of",
        heading: "Page faults (where resident memory grew; the leaf says which kind of mapping)",
        values: &[("faults", "count", Field::Count)],
        period: ("faults", "count", Period::FaultPeriod),
        weight: (Field::Count, "faults"),
        palette: "mem",
        root_label: "thread",
        memory: true,
    });

    /// The kinds recorded per interval into the flight recorder (the others are snapshots).
    pub const RECORDED: [ProfileKind; 3] = [ProfileKind::CPU, ProfileKind::OFF_CPU, ProfileKind::FAULTS];

    /// The kind an entry of the table stands for.
    pub const fn new(info: &'static KindInfo) -> Self {
        Self(info)
    }

    pub fn info(self) -> &'static KindInfo {
        self.0
    }

    fn key(self) -> (u16, &'static str) {
        (self.0.order, self.0.stem)
    }
}

impl PartialEq for ProfileKind {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}

impl Eq for ProfileKind {}

impl PartialOrd for ProfileKind {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for ProfileKind {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.key().cmp(&other.key())
    }
}

impl std::hash::Hash for ProfileKind {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.key().hash(state);
    }
}

impl std::fmt::Debug for ProfileKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0.name)
    }
}

impl serde::Serialize for ProfileKind {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.0.name)
    }
}
