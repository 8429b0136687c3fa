//! Google's pprof format, `profile.proto` (google/pprof's `proto/profile.proto`): the format of
//! `go tool pprof`, Pyroscope, Parca and Polar Signals, built with [`PprofBuilder`] and encoded
//! uncompressed (the tools read it gzipped; the caller compresses).
//!
//! Used by `tally report --pprof` (from a dump, symbolized offline); written once here so that
//! every producer of pprof agrees on the tables and their encoding.
//!
//! The protobuf encoding is written by hand: the schema is fixed and small, and a generated
//! encoder would need `protoc` at build time. [`Encoder`] knows the three wire types the schema
//! uses (varint, length-delimited, packed varints).

use std::collections::HashMap;
use std::string::{String, ToString};
use std::vec::Vec;

/// One mapping of the profile: an object's executable segment in the address space.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MappingInfo<'a> {
    /// First address.
    pub start: u64,
    /// Address past the end.
    pub end: u64,
    /// Offset in the file of `start`.
    pub offset: u64,
    /// The object's path.
    pub path: &'a str,
    /// The object's GNU build id (empty: unknown), written in hex.
    pub build_id: &'a [u8],
    /// Whether the profile's locations in it carry function names, file names, line numbers and
    /// inline frames (fields 7 to 10 of `Mapping`: the tools then need not symbolize again).
    pub symbolized: (bool, bool, bool, bool),
}

/// A profile being built: tables filled in the order the caller gives them, ids from 1.
pub struct PprofBuilder {
    strings: StringTable,
    sample_types: Vec<Encoder>,
    mappings: Vec<Encoder>,
    samples: Vec<Encoder>,
    locations: Vec<Encoder>,
    functions: Vec<Encoder>,
    function_ids: HashMap<(String, Option<String>), u64>,
    values_per_sample: usize,
}

impl PprofBuilder {
    /// A profile whose samples carry one value per entry of `sample_types` (`(type, unit)`, e.g.
    /// `("inuse_space", "bytes")`), in that order.
    pub fn new(sample_types: &[(&str, &str)]) -> PprofBuilder {
        let mut builder = PprofBuilder {
            strings: StringTable::default(),
            sample_types: Vec::new(),
            mappings: Vec::new(),
            samples: Vec::new(),
            locations: Vec::new(),
            functions: Vec::new(),
            function_ids: HashMap::new(),
            values_per_sample: sample_types.len(),
        };
        for (name, unit) in sample_types {
            let mut value_type = Encoder::default();
            value_type.int(1, builder.strings.index(name));
            value_type.int(2, builder.strings.index(unit));
            builder.sample_types.push(value_type);
        }
        builder
    }

    /// Adds a mapping; returns its id.
    pub fn mapping(&mut self, m: &MappingInfo<'_>) -> u64 {
        let id = self.mappings.len() as u64 + 1;
        let mut message = Encoder::default();
        message.int(1, id);
        message.int(2, m.start);
        message.int(3, m.end);
        message.int(4, m.offset);
        message.int(5, self.strings.index(m.path));
        if !m.build_id.is_empty() {
            let hex: String = m.build_id.iter().flat_map(|b| hex_digits(*b)).collect();
            message.int(6, self.strings.index(&hex));
        }
        let (functions, files, lines, inlines) = m.symbolized;
        for (field, on) in [(7, functions), (8, files), (9, lines), (10, inlines)] {
            message.int(field, u64::from(on));
        }
        self.mappings.push(message);
        id
    }

    /// The id of the function `name` in `file` (added the first time it is asked for).
    pub fn function(&mut self, name: &str, file: Option<&str>) -> u64 {
        self.function_named(name, name, file)
    }

    /// The id of the function `name` whose symbol is `system_name` (its mangled name) in
    /// `file` (added the first time it is asked for).
    pub fn function_named(&mut self, name: &str, system_name: &str, file: Option<&str>) -> u64 {
        let key = (system_name.to_string(), file.map(str::to_string));
        if let Some(&id) = self.function_ids.get(&key) {
            return id;
        }
        let id = self.functions.len() as u64 + 1;
        let mut message = Encoder::default();
        message.int(1, id);
        message.int(2, self.strings.index(name));
        message.int(3, self.strings.index(system_name));
        if let Some(file) = file {
            message.int(4, self.strings.index(file));
        }
        self.functions.push(message);
        self.function_ids.insert(key, id);
        id
    }

    /// Adds a location at `address` (in mapping `mapping`, if known) whose code is `lines`:
    /// `(function id, line number)`, innermost inlined frame first; returns its id.
    pub fn location(&mut self, address: u64, mapping: Option<u64>, lines: &[(u64, u32)]) -> u64 {
        let id = self.locations.len() as u64 + 1;
        let mut message = Encoder::default();
        message.int(1, id);
        if let Some(mapping) = mapping {
            message.int(2, mapping);
        }
        message.int(3, address);
        for &(function, number) in lines {
            let mut line = Encoder::default();
            line.int(1, function);
            line.int(2, u64::from(number));
            message.message(4, &line);
        }
        self.locations.push(message);
        id
    }

    /// Adds a sample: its stack (location ids, innermost first) and one value per sample type
    /// (fewer are padded with zeros, more are cut).
    pub fn sample(&mut self, locations: &[u64], values: &[i64]) {
        let mut sample = Encoder::default();
        sample.packed(1, locations.iter().copied());
        let padded = (0..self.values_per_sample).map(|i| values.get(i).copied().unwrap_or(0) as u64);
        sample.packed(2, padded);
        self.samples.push(sample);
    }

    /// The encoded `Profile`: the tables, then `period_type` (`(type, unit)`) and `period`, a
    /// comment, and the sample type tools show first (one of those given to [`Self::new`]).
    pub fn finish(
        mut self,
        period_type: (&str, &str),
        period: u64,
        comment: &str,
        default_sample_type: &str,
    ) -> Vec<u8> {
        let mut profile = Encoder::default();
        for value_type in &self.sample_types {
            profile.message(1, value_type);
        }
        for mapping in &self.mappings {
            profile.message(3, mapping);
        }
        for sample in &self.samples {
            profile.message(2, sample);
        }
        for location in &self.locations {
            profile.message(4, location);
        }
        for function in &self.functions {
            profile.message(5, function);
        }
        let mut period_message = Encoder::default();
        period_message.int(1, self.strings.index(period_type.0));
        period_message.int(2, self.strings.index(period_type.1));
        let default_index = self.strings.index(default_sample_type);
        let comment = self.strings.index(comment);
        for string in &self.strings.strings {
            profile.bytes(6, string.as_bytes());
        }
        profile.message(11, &period_message);
        profile.int(12, period);
        profile.int(13, comment);
        profile.int(14, default_index);
        profile.finish()
    }
}

fn hex_digits(b: u8) -> [char; 2] {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    [
        DIGITS[(b >> 4) as usize] as char,
        DIGITS[(b & 15) as usize] as char,
    ]
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

    /// Functions are shared by name and file; ids count from 1 in each table; a sample's values
    /// are padded to the sample types; a build id is written in hex.
    #[test]
    fn builds_the_tables() {
        let mut b = PprofBuilder::new(&[("inuse_objects", "count"), ("inuse_space", "bytes")]);
        let m = b.mapping(&MappingInfo {
            start: 0x1000,
            end: 0x2000,
            path: "/bin/x",
            build_id: &[0xab, 0x01],
            ..MappingInfo::default()
        });
        let f = b.function("leak", Some("x.c"));
        assert_eq!(b.function("leak", Some("x.c")), f);
        let g = b.function("leak", None);
        assert_ne!(f, g);
        let l = b.location(0x1234, Some(m), &[(f, 7), (g, 0)]);
        assert_eq!((m, f, g, l), (1, 1, 2, 1));
        b.sample(&[l], &[3]);
        let bytes = b.finish(("space", "bytes"), 524288, "test", "inuse_space");
        let text = String::from_utf8_lossy(&bytes);
        assert!(text.contains("ab01") && text.contains("/bin/x") && text.contains("inuse_space"));
        // The sample: location 1, values 3 and 0.
        assert!(bytes
            .windows(9)
            .any(|w| w == [0x12, 0x07, 0x0a, 0x01, 0x01, 0x12, 0x02, 0x03, 0x00]));
    }
}
