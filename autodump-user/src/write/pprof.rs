//! Encodes a [`Profile`] as gzip'd pprof, readable by `go tool pprof` and other pprof tools.
//!
//! Sample types, period and root label come from the kind's entry in `record::kind`: on-CPU
//! `samples/count` and `cpu/nanoseconds` with a period of 1e9/frequency ns; off-CPU
//! `samples/count` (blocks) and `off_cpu/nanoseconds`; page faults `faults/count` with the fault
//! period. Each sample carries the thread name as the `thread` label.

use std::{collections::HashMap, io::Write};

use flate2::{write::GzEncoder, Compression};
use prost::Message;

use super::pprof_proto as pb;
use crate::record::{kind::Period, profile::Profile};

/// Recording facts pprof stores beside the samples.
pub struct PprofMeta {
    /// Start of the window, Unix nanoseconds.
    pub time_nanos: i64,
    pub duration_nanos: i64,
    pub frequency_hz: u64,
    /// One recorded page fault stands for this many.
    pub fault_period: u64,
    pub comment: String,
}

#[derive(Default)]
struct Strings {
    table: Vec<String>,
    index: HashMap<String, i64>,
}

impl Strings {
    fn new() -> Self {
        let mut s = Self::default();
        s.get(""); // index 0 must be the empty string
        s
    }

    fn get(&mut self, s: &str) -> i64 {
        if let Some(&i) = self.index.get(s) {
            return i;
        }
        let i = self.table.len() as i64;
        self.table.push(s.to_string());
        self.index.insert(s.to_string(), i);
        i
    }
}

pub fn encode(profile: &Profile, meta: &PprofMeta) -> pb::Profile {
    let mut strings = Strings::new();
    let mut vt = |t: &str, u: &str| pb::ValueType { r#type: strings.get(t), unit: strings.get(u) };
    let info = profile.kind.info();
    let sample_type: Vec<pb::ValueType> = info.values.iter().map(|&(t, u, _)| vt(t, u)).collect();
    let period_type = Some(vt(info.period.0, info.period.1));
    let period = match info.period.2 {
        Period::SamplingInterval => (1_000_000_000 / meta.frequency_hz.max(1)) as i64,
        Period::FaultPeriod => meta.fault_period.max(1) as i64,
        Period::OfProfile => profile.period as i64,
        Period::One => 1,
    };

    let mut mappings: Vec<pb::Mapping> = Vec::new();
    let mut mapping_ids: HashMap<(u64, u64), u64> = HashMap::new();
    let mut functions: Vec<pb::Function> = Vec::new();
    let mut function_ids: HashMap<(String, String), u64> = HashMap::new();
    let mut locations = Vec::with_capacity(profile.locations.len());
    for (i, loc) in profile.locations.iter().enumerate() {
        let mapping_id = loc.mapping.as_ref().map_or(0, |m| {
            *mapping_ids.entry((m.start, m.end)).or_insert_with(|| {
                let id = mappings.len() as u64 + 1;
                mappings.push(pb::Mapping {
                    id,
                    memory_start: m.start,
                    memory_limit: m.end,
                    file_offset: m.file_offset,
                    filename: strings.get(&m.path),
                    has_functions: true,
                    ..Default::default()
                });
                id
            })
        });
        let line = loc
            .frames
            .iter()
            .map(|frame| {
                let name = if loc.kernel { format!("{}_[k]", frame.function) } else { frame.function.to_string() };
                let file = frame.file.as_deref().unwrap_or("").to_string();
                let function_id = *function_ids.entry((name.clone(), file.clone())).or_insert_with(|| {
                    let id = functions.len() as u64 + 1;
                    functions.push(pb::Function {
                        id,
                        name: strings.get(&name),
                        system_name: strings.get(&name),
                        filename: strings.get(&file),
                        start_line: 0,
                    });
                    id
                });
                pb::Line { function_id, line: frame.line.map_or(0, i64::from) }
            })
            .collect();
        locations.push(pb::Location { id: i as u64 + 1, mapping_id, address: loc.address, line, is_folded: false });
    }

    // Each stack's root: a thread's name, or what the kind says it is (a goroutine's state).
    let thread_key = strings.get(info.root_label);
    let values = |v: &crate::record::profile::SampleValue| info.values.iter().map(|f| v.get(f.2) as i64).collect();
    let samples = profile
        .sorted_samples()
        .into_iter()
        .map(|(key, value)| pb::Sample {
            location_id: key.stack.iter().map(|&i| u64::from(i) + 1).collect(),
            value: values(value),
            label: vec![pb::Label { key: thread_key, str: strings.get(&key.thread), ..Default::default() }],
        })
        .collect();
    let comment = vec![strings.get(&meta.comment)];
    // The time-valued type is what a reader wants first (a string-table index, not a position).
    let default_sample_type = sample_type.last().map_or(0, |t| t.r#type);
    pb::Profile {
        sample_type,
        sample: samples,
        mapping: mappings,
        location: locations,
        function: functions,
        time_nanos: meta.time_nanos,
        duration_nanos: meta.duration_nanos,
        period_type,
        period,
        comment,
        default_sample_type,
        string_table: strings.table,
    }
}

pub fn gzipped(profile: &pb::Profile) -> std::io::Result<Vec<u8>> {
    let mut gz = GzEncoder::new(Vec::new(), Compression::default());
    gz.write_all(&profile.encode_to_vec())?;
    gz.finish()
}

/// Encodes `profile` and writes it gzip'd to `out`; the decoded form is freed before compressing.
pub fn write_gzipped(profile: &Profile, meta: &PprofMeta, out: &mut dyn Write) -> std::io::Result<()> {
    let encoded = encode(profile, meta).encode_to_vec();
    let mut gz = GzEncoder::new(out, Compression::default());
    gz.write_all(&encoded)?;
    gz.finish().map(drop)
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;
    use crate::record::profile::{tests::sample_profile, ProfileKind};

    fn meta() -> PprofMeta {
        PprofMeta {
            time_nanos: 1_700_000_000_000_000_000,
            duration_nanos: 10_000_000_000,
            frequency_hz: 99,
            fault_period: 16,
            comment: "test".into(),
        }
    }

    #[test]
    fn round_trips_through_gzip_and_protobuf() {
        let encoded = encode(&sample_profile(), &meta());
        let bytes = gzipped(&encoded).unwrap();
        let mut raw = Vec::new();
        flate2::read::GzDecoder::new(&bytes[..]).read_to_end(&mut raw).unwrap();
        let decoded = pb::Profile::decode(&raw[..]).unwrap();
        assert_eq!(decoded, encoded);

        let s = |i: i64| decoded.string_table[i as usize].as_str();
        assert_eq!(s(0), "");
        let types: Vec<_> = decoded.sample_type.iter().map(|t| (s(t.r#type), s(t.unit))).collect();
        assert_eq!(types, [("samples", "count"), ("cpu", "nanoseconds")]);
        assert_eq!(decoded.period, 1_000_000_000 / 99);
        assert_eq!(s(decoded.default_sample_type), "cpu");
        let total: i64 = decoded.sample.iter().map(|x| x.value[0]).sum();
        assert_eq!(total, 45);

        // The heaviest sample reads leaf first: spin <- work <- main, on thread "worker".
        let heaviest = &decoded.sample[0];
        let name_of = |loc_id: u64| {
            let loc = &decoded.location[loc_id as usize - 1];
            let f = &decoded.function[loc.line[0].function_id as usize - 1];
            s(f.name).to_string()
        };
        let names: Vec<String> = heaviest.location_id.iter().map(|&id| name_of(id)).collect();
        assert_eq!(names, ["spin", "work", "main"]);
        assert_eq!(s(heaviest.label[0].key), "thread");
        assert_eq!(s(heaviest.label[0].str), "worker");
        assert!(decoded.function.iter().any(|f| s(f.name) == "do_syscall_64_[k]"));
    }

    #[test]
    fn a_kind_of_its_own_has_its_values_root_label_and_period() {
        // A runtime's kind, as Go's goroutine snapshots: one value, the state at the root.
        static SNAPSHOT: crate::record::kind::KindInfo = crate::record::kind::KindInfo {
            order: 60,
            name: "snapshot",
            stem: "snapshot",
            title: "snapshot of",
            heading: "Snapshot",
            values: &[("goroutine", "count", crate::record::kind::Field::Count)],
            period: ("goroutine", "count", Period::OfProfile),
            weight: (crate::record::kind::Field::Count, "goroutines"),
            palette: "aqua",
            root_label: "state",
            memory: false,
        };
        let mut p = sample_profile();
        p.kind = ProfileKind::new(&SNAPSHOT);
        p.period = 7;
        let encoded = encode(&p, &meta());
        let s = |i: i64| encoded.string_table[i as usize].as_str();
        assert_eq!(encoded.sample_type.len(), 1);
        assert_eq!((s(encoded.sample_type[0].r#type), s(encoded.sample_type[0].unit)), ("goroutine", "count"));
        assert!(encoded.sample.iter().all(|x| x.value.len() == 1));
        assert_eq!(s(encoded.sample[0].label[0].key), "state");
        assert_eq!(encoded.period, 7, "the profile's own period");
    }

    #[test]
    fn off_cpu_uses_off_cpu_units() {
        let mut p = sample_profile();
        p.kind = ProfileKind::OFF_CPU;
        let encoded = encode(&p, &meta());
        let s = |i: i64| encoded.string_table[i as usize].as_str();
        assert_eq!(s(encoded.sample_type[1].r#type), "off_cpu");
        assert_eq!(s(encoded.sample_type[1].unit), "nanoseconds");
    }

    #[test]
    fn faults_count_faults_at_the_fault_period() {
        let mut p = sample_profile();
        p.kind = ProfileKind::FAULTS;
        let encoded = encode(&p, &meta());
        let s = |i: i64| encoded.string_table[i as usize].as_str();
        let types: Vec<_> = encoded.sample_type.iter().map(|t| (s(t.r#type), s(t.unit))).collect();
        assert_eq!(types, [("faults", "count")]);
        assert_eq!(encoded.period, 16);
        assert_eq!(encoded.sample.iter().map(|x| x.value[0]).sum::<i64>(), 45);
    }
}
