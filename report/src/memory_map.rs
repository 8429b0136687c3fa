//! The process's memory map as the dump recorded it: which mapping holds an address, and where in
//! which file that address lies.

use crate::dump::Mapping;

/// The mappings of one dump, sorted by start address for binary search.
#[derive(Debug, Clone)]
pub struct MemoryMap {
    mappings: Vec<Mapping>,
    /// A hash of all the mappings: equal maps (the same dump read twice) have equal keys.
    key: u64,
}

/// Where an address lies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place<'a> {
    /// In a mapping of a file: the file's path and the offset of the address in the file.
    File {
        /// The mapped file (without the kernel's ` (deleted)` suffix).
        path: &'a str,
        /// Offset in the file: `address − start + mapping offset`.
        offset: u64,
    },
    /// In a named mapping that is no file (`[vdso]`, `[heap]`, …): its name and the offset from
    /// its start.
    Special {
        /// The name as the kernel wrote it.
        name: &'a str,
        /// `address − start`.
        offset: u64,
    },
    /// In anonymous memory or outside every mapping (JIT code, a damaged frame).
    Unknown,
}

impl MemoryMap {
    /// Builds the lookup structure. Overlapping mappings (which a real map never has) are kept;
    /// the one that starts last before an address wins.
    pub fn new(mappings: &[Mapping]) -> MemoryMap {
        let mut mappings = mappings.to_vec();
        mappings.sort_by_key(|m| (m.start, m.end));
        MemoryMap {
            key: key(&mappings),
            mappings,
        }
    }

    /// Identifies the address space (of one dump): [`key`] of its mappings.
    pub fn key(&self) -> u64 {
        self.key
    }

    /// The anonymous executable mapping holding `address`, where JIT compilers put their code
    /// (and where `address` is [`Place::Unknown`]).
    pub fn jit_mapping(&self, address: u64) -> Option<&Mapping> {
        let after = self.mappings.partition_point(|m| m.start <= address);
        let mapping = &self.mappings[after.checked_sub(1)?];
        (address < mapping.end && mapping.path.is_empty() && mapping.is_executable()).then_some(mapping)
    }

    /// The mappings, sorted by start address.
    pub fn mappings(&self) -> &[Mapping] {
        &self.mappings
    }

    /// The program's own file: the file mapped lowest in memory (executables are mapped below
    /// the shared libraries, PIE or not), without a ` (deleted)` suffix.
    pub fn main_program(&self) -> Option<&str> {
        self.mappings
            .iter()
            .find(|m| m.path.starts_with('/'))
            .map(|m| file_path(&m.path))
    }

    /// Where `address` lies.
    pub fn place(&self, address: u64) -> Place<'_> {
        let after = self.mappings.partition_point(|m| m.start <= address);
        let Some(mapping) = after.checked_sub(1).map(|i| &self.mappings[i]) else {
            return Place::Unknown;
        };
        if address >= mapping.end {
            return Place::Unknown;
        }
        let from_start = address - mapping.start;
        if mapping.path.starts_with('/') {
            Place::File {
                path: file_path(&mapping.path),
                offset: mapping.offset.wrapping_add(from_start),
            }
        } else if mapping.path.is_empty() {
            Place::Unknown
        } else {
            Place::Special {
                name: &mapping.path,
                offset: from_start,
            }
        }
    }
}

/// A hash of `mappings` (in the order given) that tells address spaces apart.
pub fn key(mappings: &[Mapping]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    for m in mappings {
        (m.start, m.end, m.offset, &m.perms, &m.path).hash(&mut hasher);
    }
    hasher.finish()
}

/// The file's path without the ` (deleted)` the kernel appends once a mapped file is removed.
pub fn file_path(path: &str) -> &str {
    path.strip_suffix(" (deleted)").unwrap_or(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(start: u64, end: u64, offset: u64, path: &str) -> Mapping {
        Mapping {
            start,
            end,
            perms: "r-xp".into(),
            offset,
            path: path.into(),
            ..Mapping::default()
        }
    }

    #[test]
    fn finds_the_mapping_and_file_offset() {
        let map = MemoryMap::new(&[
            m(0x2000, 0x3000, 0x1000, "/lib/b.so (deleted)"),
            m(0x1000, 0x2000, 0, "/lib/b.so"),
            m(0x5000, 0x6000, 0, "[vdso]"),
            m(0x7000, 0x8000, 0, ""),
        ]);
        assert_eq!(
            map.place(0x1004),
            Place::File {
                path: "/lib/b.so",
                offset: 4
            }
        );
        assert_eq!(map.place(0x2ffff), Place::Unknown);
        assert_eq!(
            map.place(0x2fff),
            Place::File {
                path: "/lib/b.so",
                offset: 0x1fff
            }
        );
        assert_eq!(
            map.place(0x5010),
            Place::Special {
                name: "[vdso]",
                offset: 0x10
            }
        );
        assert_eq!(map.place(0x7010), Place::Unknown);
        assert_eq!(map.place(0x10), Place::Unknown);
        assert_eq!(map.place(0x3000), Place::Unknown);
        // Only anonymous executable memory is JIT code.
        assert_eq!(map.jit_mapping(0x7fff).map(|m| m.start), Some(0x7000));
        assert_eq!(map.jit_mapping(0x8000), None);
        assert_eq!(map.jit_mapping(0x5010), None);
        assert_eq!(map.jit_mapping(0x1004), None);
        let mut data = m(0x9000, 0xa000, 0, "");
        data.perms = "rw-p".into();
        assert_eq!(MemoryMap::new(&[data]).jit_mapping(0x9000), None);
        assert_ne!(map.key(), MemoryMap::new(&[m(0x7000, 0x8000, 0, "")]).key());
    }
}
