//! The kinds of profile a bundle holds, and the one table that says how each is written: its
//! files, its pprof sample types, the weight of its folded stacks, how its flamegraph is drawn
//! and where `index.html` lists it. Every writer reads this table; a new kind is a new entry.

/// In the order bundles list them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProfileKind {
    /// On-CPU samples from the cpu-clock sampler.
    Cpu,
    /// A Go program's goroutines over the window, from snapshots: goroutine-time by stack and
    /// state, the wait reason at the leaf. Before `OffCpu`: for Go, this is where it waits.
    GoWait,
    /// Time blocked (or waiting for a CPU), from sched_switch.
    OffCpu,
    /// Page faults: where the process first touched memory, so where its resident size grew.
    Faults,
    /// A Go program's heap profile, read from its runtime: what is allocated and still in use.
    Heap,
    /// The same, read before the window: `go tool pprof -diff_base heap-base.pb.gz heap.pb.gz`.
    HeapBase,
    /// A snapshot of a Go program's goroutines; the root frame is the goroutine's state.
    Goroutines,
}

/// Which number of a [`super::profile::SampleValue`] a value is.
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
    /// The Go runtime's `MemProfileRate`: one sample per this many bytes allocated.
    HeapRate,
    /// Every event is counted.
    One,
}

pub struct KindInfo {
    /// `<stem>.folded`, `<stem>.svg`, `<stem>.pb.gz`, and the name in summaries.
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
    /// The kinds recorded per interval into the flight recorder (the others are snapshots).
    pub const RECORDED: [ProfileKind; 3] = [ProfileKind::Cpu, ProfileKind::OffCpu, ProfileKind::Faults];

    pub fn info(self) -> &'static KindInfo {
        match self {
            ProfileKind::Cpu => &KindInfo {
                stem: "cpu",
                title: "on-CPU",
                heading: "On-CPU",
                values: &[("samples", "count", Field::Count), ("cpu", "nanoseconds", Field::Nanos)],
                period: ("cpu", "nanoseconds", Period::SamplingInterval),
                weight: (Field::Count, "samples"),
                palette: "hot",
                root_label: "thread",
                memory: false,
            },
            ProfileKind::OffCpu => &KindInfo {
                stem: "offcpu",
                title: "off-CPU",
                heading: "Off-CPU (where threads block)",
                values: &[("samples", "count", Field::Count), ("off_cpu", "nanoseconds", Field::Nanos)],
                period: ("off_cpu", "nanoseconds", Period::One),
                weight: (Field::Micros, "us"),
                palette: "blue",
                root_label: "thread",
                memory: false,
            },
            ProfileKind::Faults => &KindInfo {
                stem: "faults",
                title: "page faults of",
                heading: "Page faults (where resident memory grew; the leaf says which kind of mapping)",
                values: &[("faults", "count", Field::Count)],
                period: ("faults", "count", Period::FaultPeriod),
                weight: (Field::Count, "faults"),
                palette: "mem",
                root_label: "thread",
                memory: true,
            },
            ProfileKind::Heap => &HEAP,
            ProfileKind::HeapBase => &KindInfo {
                stem: "heap-base",
                title: "Go heap in use, before the window, of",
                heading: "Go heap in use before the window",
                ..HEAP
            },
            ProfileKind::GoWait => &KindInfo {
                stem: "gowait",
                title: "goroutine time of",
                heading: "Goroutines: where they wait, and for how long (goroutine-time; the leaf is the wait reason)",
                values: &[("goroutines", "count", Field::Count), ("goroutine_time", "nanoseconds", Field::Nanos)],
                period: ("goroutine_time", "nanoseconds", Period::One),
                weight: (Field::Micros, "us"),
                palette: "blue",
                root_label: "state",
                memory: false,
            },
            ProfileKind::Goroutines => &KindInfo {
                stem: "goroutines",
                title: "goroutines of",
                heading: "Goroutines (by state)",
                values: &[("goroutine", "count", Field::Count)],
                period: ("goroutine", "count", Period::One),
                weight: (Field::Count, "goroutines"),
                palette: "aqua",
                root_label: "state",
                memory: false,
            },
        }
    }
}

/// A Go heap profile as `runtime/pprof` writes one, so that `go tool pprof` reads it as such.
const HEAP: KindInfo = KindInfo {
    stem: "heap",
    title: "Go heap in use of",
    heading: "Go heap in use (allocated and not yet freed, by the runtime's own profile)",
    values: &[
        ("alloc_objects", "count", Field::AllocCount),
        ("alloc_space", "bytes", Field::AllocBytes),
        ("inuse_objects", "count", Field::Count),
        ("inuse_space", "bytes", Field::Bytes),
    ],
    period: ("space", "bytes", Period::HeapRate),
    weight: (Field::Bytes, "bytes"),
    palette: "mem",
    root_label: "thread",
    memory: true,
};

impl Field {
    /// This number of a sample's value.
    pub fn of(self, value: &super::profile::SampleValue) -> u64 {
        match self {
            Field::Count => value.count,
            Field::Nanos => value.nanos,
            Field::Micros => (value.nanos + 500) / 1000,
            Field::Bytes => value.bytes,
            Field::AllocCount => value.alloc_count,
            Field::AllocBytes => value.alloc_bytes,
        }
    }
}
