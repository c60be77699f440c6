//! The profiles a Go program's bundle adds, in the table every writer reads (`record::kind`).

use crate::record::{
    kind::{Field, KindInfo, Period},
    profile::ProfileKind,
};

/// The goroutines over the window, from snapshots: goroutine-time by stack and state, the wait
/// reason at the leaf. Listed before off-CPU: for Go, this is where it waits.
pub const GO_WAIT: ProfileKind = ProfileKind::new(&KindInfo {
    order: 10,
    name: "go_wait",
    stem: "gowait",
    title: "goroutine time of",
    heading: "Goroutines: where they wait, and for how long (goroutine-time; the leaf is the wait reason)",
    values: &[("goroutines", "count", Field::Count), ("goroutine_time", "nanoseconds", Field::Nanos)],
    period: ("goroutine_time", "nanoseconds", Period::One),
    weight: (Field::Micros, "us"),
    palette: "blue",
    root_label: "state",
    memory: false,
});

/// The runtime's heap profile, as `runtime/pprof` writes one, so that `go tool pprof` reads it
/// as such: what is allocated and still in use.
pub const HEAP: ProfileKind = ProfileKind::new(&HEAP_INFO);

/// The same, read before the window: `go tool pprof -diff_base heap-base.pb.gz heap.pb.gz`.
pub const HEAP_BASE: ProfileKind = ProfileKind::new(&KindInfo {
    order: 50,
    name: "heap_base",
    stem: "heap-base",
    title: "Go heap in use, before the window, of",
    heading: "Go heap in use before the window",
    ..HEAP_INFO
});

/// A snapshot of the goroutines; the root frame is the goroutine's state.
pub const GOROUTINES: ProfileKind = ProfileKind::new(&KindInfo {
    order: 60,
    name: "goroutines",
    stem: "goroutines",
    title: "goroutines of",
    heading: "Goroutines (by state)",
    values: &[("goroutine", "count", Field::Count)],
    period: ("goroutine", "count", Period::One),
    weight: (Field::Count, "goroutines"),
    palette: "aqua",
    root_label: "state",
    memory: false,
});

const HEAP_INFO: KindInfo = KindInfo {
    order: 40,
    name: "heap",
    stem: "heap",
    title: "Go heap in use of",
    heading: "Go heap in use (allocated and not yet freed, by the runtime's own profile)",
    values: &[
        ("alloc_objects", "count", Field::AllocCount),
        ("alloc_space", "bytes", Field::AllocBytes),
        ("inuse_objects", "count", Field::Count),
        ("inuse_space", "bytes", Field::Bytes),
    ],
    period: ("space", "bytes", Period::OfProfile),
    weight: (Field::Bytes, "bytes"),
    palette: "mem",
    root_label: "thread",
    memory: true,
};
