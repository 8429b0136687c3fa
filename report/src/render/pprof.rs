//! `--pprof`: a gzipped `profile.proto` (google/pprof's `proto/profile.proto`), the format of
//! `go tool pprof`, Pyroscope, Parca and Polar Signals.
//!
//! Go's heap convention, which those tools expect:
//! - four sample types, in this order: `alloc_objects/count`, `alloc_space/bytes`,
//!   `inuse_objects/count`, `inuse_space/bytes` (the default is the one the report was asked for,
//!   `inuse_space` unless told otherwise);
//! - `period_type` `space/bytes`, `period` = the dump's mean sampling period T;
//! - values already un-biased (jeprof's arithmetic, as in `--text`), rounded to integers;
//! - stacks as `--text` counts them: allocator frames removed, `--focus`/`--ignore` applied,
//!   `--base` subtracted (values may then be negative).
//!
//! Tables: one `Location` per symbolized location (its address is the first raw address that
//! resolved to it, its `Line`s the inline chain, innermost first); one `Function` per distinct
//! (name, file); one `Mapping` per executable file mapping of the dump, with the file's build id.
//! Locations carry function names and lines, so the tools need not symbolize again
//! (`has_functions`, `has_filenames`, `has_line_numbers`, `has_inline_frames`).
//!
//! The tables and their encoding are `tally_format::pprof`'s, shared with every producer of pprof.

use std::collections::{BTreeMap, HashMap};
use std::io::{self, Write};

use flate2::write::GzEncoder;
use flate2::Compression;
use tally_format::pprof::{MappingInfo, PprofBuilder};

use crate::dump::Dump;
use crate::memory_map::{MemoryMap, Place};
use crate::profile::SampleType;
use crate::symbolize::{LocationId, Symbolizer};

/// The four sample types, in the order of the values of every sample.
pub const SAMPLE_TYPES: [(SampleType, &str, &str); 4] = [
    (SampleType::AllocObjects, "alloc_objects", "count"),
    (SampleType::AllocSpace, "alloc_space", "bytes"),
    (SampleType::InuseObjects, "inuse_objects", "count"),
    (SampleType::InuseSpace, "inuse_space", "bytes"),
];

/// Values per stack, in the order of [`SAMPLE_TYPES`].
pub type Samples = BTreeMap<Vec<LocationId>, [f64; 4]>;

/// Writes the gzipped profile of `samples`, whose locations were symbolized from `dump` by
/// `symbolizer`; `default` is the sample type tools show first.
pub fn write(
    out: &mut dyn Write,
    dump: &Dump,
    samples: &Samples,
    symbolizer: &Symbolizer,
    default: SampleType,
) -> io::Result<()> {
    let bytes = encode(dump, samples, symbolizer, default);
    let mut gzip = GzEncoder::new(Vec::new(), Compression::default());
    gzip.write_all(&bytes)?;
    out.write_all(&gzip.finish()?)
}

/// The uncompressed `Profile` message.
pub fn encode(dump: &Dump, samples: &Samples, symbolizer: &Symbolizer, default: SampleType) -> Vec<u8> {
    let types: Vec<(&str, &str)> = SAMPLE_TYPES.iter().map(|&(_, name, unit)| (name, unit)).collect();
    let mut profile = PprofBuilder::new(&types);

    // Mappings: the executable file mappings, ids from 1.
    let map = MemoryMap::new(&dump.maps);
    let mut mapping_ids: HashMap<(u64, u64), u64> = HashMap::new();
    for mapping in map.mappings().iter().filter(|m| m.is_executable()) {
        let Place::File { path, .. } = map.place(mapping.start) else {
            continue;
        };
        let build_id = symbolizer.build_id(path);
        let id = profile.mapping(&MappingInfo {
            start: mapping.start,
            end: mapping.end,
            offset: mapping.offset,
            path,
            build_id: build_id.unwrap_or(&[]),
            symbolized: (true, true, true, true),
        });
        mapping_ids.insert((mapping.start, mapping.end), id);
    }

    // Locations and functions, in the order the samples first use them.
    let mut location_ids: HashMap<LocationId, u64> = HashMap::new();
    for stack in samples.keys() {
        for &id in stack {
            if location_ids.contains_key(&id) {
                continue;
            }
            let address = symbolizer.first_address(id);
            let mapping = map
                .mappings()
                .iter()
                .find(|m| m.start <= address && address < m.end)
                .and_then(|m| mapping_ids.get(&(m.start, m.end)))
                .copied();
            let lines: Vec<(u64, u32)> = symbolizer
                .location(id)
                .frames
                .iter()
                .map(|frame| {
                    (
                        profile.function(&frame.function, frame.file.as_deref()),
                        frame.line,
                    )
                })
                .collect();
            location_ids.insert(id, profile.location(address, mapping, &lines));
        }
    }

    for (stack, values) in samples {
        let locations: Vec<u64> = stack.iter().map(|id| location_ids[id]).collect();
        let values: Vec<i64> = values.iter().map(|&v| v.round() as i64).collect();
        profile.sample(&locations, &values);
    }

    let default_name = SAMPLE_TYPES
        .iter()
        .find(|(sample, _, _)| *sample == default)
        .map_or("inuse_space", |(_, name, _)| name);
    profile.finish(
        ("space", "bytes"),
        dump.period,
        "written by tally report from a heap_v2 dump",
        default_name,
    )
}
