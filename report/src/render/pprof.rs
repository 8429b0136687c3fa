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
//! The protobuf encoding is written here by hand: the schema is fixed and small, and a generated
//! encoder would need `protoc` at build time. [`Encoder`] knows the three wire types the schema
//! uses (varint, length-delimited, packed varints).

use std::collections::{BTreeMap, HashMap};
use std::io::{self, Write};

use flate2::write::GzEncoder;
use flate2::Compression;

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
    let mut strings = StringTable::default();
    let mut profile = Encoder::default();

    for (_, name, unit) in SAMPLE_TYPES {
        let mut value_type = Encoder::default();
        value_type.int(1, strings.index(name));
        value_type.int(2, strings.index(unit));
        profile.message(1, &value_type);
    }

    // Mappings: the executable file mappings, ids from 1.
    let map = MemoryMap::new(&dump.maps);
    let mut mapping_ids: HashMap<(u64, u64), u64> = HashMap::new();
    for mapping in map.mappings().iter().filter(|m| m.is_executable()) {
        let Place::File { path, .. } = map.place(mapping.start) else {
            continue;
        };
        let id = mapping_ids.len() as u64 + 1;
        mapping_ids.insert((mapping.start, mapping.end), id);
        let mut message = Encoder::default();
        message.int(1, id);
        message.int(2, mapping.start);
        message.int(3, mapping.end);
        message.int(4, mapping.offset);
        message.int(5, strings.index(path));
        if let Some(build_id) = symbolizer.build_id(path) {
            let hex: String = build_id.iter().map(|b| format!("{b:02x}")).collect();
            message.int(6, strings.index(&hex));
        }
        for field in 7..=10 {
            message.int(field, 1);
        }
        profile.message(3, &message);
    }

    // Locations and functions, in the order the samples first use them.
    let mut location_ids: HashMap<LocationId, u64> = HashMap::new();
    let mut function_ids: HashMap<(String, Option<String>), u64> = HashMap::new();
    let mut locations = Vec::new();
    let mut functions = Vec::new();
    for stack in samples.keys() {
        for &id in stack {
            if location_ids.contains_key(&id) {
                continue;
            }
            let number = location_ids.len() as u64 + 1;
            location_ids.insert(id, number);
            let address = symbolizer.first_address(id);
            let mut message = Encoder::default();
            message.int(1, number);
            let mapping = map
                .mappings()
                .iter()
                .find(|m| m.start <= address && address < m.end)
                .and_then(|m| mapping_ids.get(&(m.start, m.end)));
            if let Some(&mapping) = mapping {
                message.int(2, mapping);
            }
            message.int(3, address);
            let location = symbolizer.location(id);
            for frame in &location.frames {
                let key = (frame.function.clone(), frame.file.clone());
                let function = match function_ids.get(&key) {
                    Some(&function) => function,
                    None => {
                        let function = function_ids.len() as u64 + 1;
                        function_ids.insert(key, function);
                        let mut message = Encoder::default();
                        message.int(1, function);
                        message.int(2, strings.index(&frame.function));
                        message.int(3, strings.index(&frame.function));
                        if let Some(file) = &frame.file {
                            message.int(4, strings.index(file));
                        }
                        functions.push(message);
                        function
                    }
                };
                let mut line = Encoder::default();
                line.int(1, function);
                line.int(2, u64::from(frame.line));
                message.message(4, &line);
            }
            locations.push(message);
        }
    }

    for (stack, values) in samples {
        let mut sample = Encoder::default();
        sample.packed(1, stack.iter().map(|id| location_ids[id]));
        sample.packed(2, values.iter().map(|&v| v.round() as i64 as u64));
        profile.message(2, &sample);
    }
    for location in &locations {
        profile.message(4, location);
    }
    for function in &functions {
        profile.message(5, function);
    }

    let mut period_type = Encoder::default();
    period_type.int(1, strings.index("space"));
    period_type.int(2, strings.index("bytes"));
    let default_name = SAMPLE_TYPES
        .iter()
        .find(|(sample, _, _)| *sample == default)
        .map_or("inuse_space", |(_, name, _)| name);
    let default_index = strings.index(default_name);
    let comment = strings.index("written by tally report from a heap_v2 dump");

    for string in &strings.strings {
        profile.bytes(6, string.as_bytes());
    }
    profile.message(11, &period_type);
    profile.int(12, dump.period);
    profile.int(13, comment);
    profile.int(14, default_index);
    profile.buffer
}

/// The profile's string table: index 0 is "", every string once.
#[derive(Default)]
struct StringTable {
    strings: Vec<String>,
    indices: HashMap<String, u64>,
}

impl StringTable {
    fn index(&mut self, text: &str) -> u64 {
        if self.strings.is_empty() {
            self.strings.push(String::new());
            self.indices.insert(String::new(), 0);
        }
        if let Some(&index) = self.indices.get(text) {
            return index;
        }
        let index = self.strings.len() as u64;
        self.strings.push(text.to_string());
        self.indices.insert(text.to_string(), index);
        index
    }
}

/// A protobuf message being written. Integers of every width and sign are varints of their
/// two's complement 64-bit value (negative `int64`s take ten bytes), as protobuf encodes them.
#[derive(Default)]
pub struct Encoder {
    buffer: Vec<u8>,
}

impl Encoder {
    fn varint(&mut self, mut value: u64) {
        while value >= 0x80 {
            self.buffer.push((value as u8) | 0x80);
            value >>= 7;
        }
        self.buffer.push(value as u8);
    }

    fn key(&mut self, field: u32, wire_type: u8) {
        self.varint(u64::from(field) << 3 | u64::from(wire_type));
    }

    /// A varint field (wire type 0); zero, the default, is left out.
    pub fn int(&mut self, field: u32, value: u64) {
        if value != 0 {
            self.key(field, 0);
            self.varint(value);
        }
    }

    /// A length-delimited field (wire type 2): bytes or a string.
    pub fn bytes(&mut self, field: u32, bytes: &[u8]) {
        self.key(field, 2);
        self.varint(bytes.len() as u64);
        self.buffer.extend_from_slice(bytes);
    }

    /// An embedded message.
    pub fn message(&mut self, field: u32, message: &Encoder) {
        self.bytes(field, &message.buffer);
    }

    /// A packed repeated varint field.
    pub fn packed(&mut self, field: u32, values: impl IntoIterator<Item = u64>) {
        let mut packed = Encoder::default();
        for value in values {
            packed.varint(value);
        }
        if !packed.buffer.is_empty() {
            self.bytes(field, &packed.buffer);
        }
    }

    /// The encoded bytes.
    pub fn finish(self) -> Vec<u8> {
        self.buffer
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_the_wire_format() {
        let mut e = Encoder::default();
        e.int(1, 150);
        e.int(2, 0);
        e.bytes(2, b"testing");
        e.packed(4, [3, 270, 86942]);
        e.packed(5, [(-1i64) as u64]);
        assert_eq!(
            e.finish(),
            [
                &[0x08, 0x96, 0x01][..],
                &[0x12, 0x07],
                b"testing",
                &[0x22, 0x06, 0x03, 0x8e, 0x02, 0x9e, 0xa7, 0x05],
                &[0x2a, 0x0a, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
            ]
            .concat()
        );
    }

    #[test]
    fn string_table_starts_empty() {
        let mut strings = StringTable::default();
        assert_eq!(strings.index("a"), 1);
        assert_eq!(strings.index(""), 0);
        assert_eq!(strings.index("a"), 1);
        assert_eq!(strings.strings, ["", "a"]);
    }
}
