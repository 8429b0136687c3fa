//! The live heap as a pprof profile (google/pprof's `profile.proto`, gzipped), made inside the
//! process from the profiler's stack table: what `tally::prof::pprof()` returns (issue 16).
//!
//! Go's heap convention, which `go tool pprof`, Pyroscope and Parca expect: sample types
//! `inuse_objects/count` and `inuse_space/bytes` (after `alloc_objects/count` and
//! `alloc_space/bytes` with `prof_accum`), `inuse_space` shown first, `period_type` `space/bytes`
//! and `period` the mean sampling distance; values un-biased as in the dumps, rounded.
//!
//! Mappings: every executable file mapping of `/proc/self/maps`, with the object's GNU build id
//! read from its notes in memory (`dl_iterate_phdr`), so that a tool can find the file and its
//! debug information. Locations: one per distinct frame address, at the address minus one (a
//! return address points past its call; pprof asks for an address inside the instruction).
//! Function names are not filled in yet: the tools symbolize from the mappings (`go tool pprof`
//! reads the files named there).
//!
//! This runs outside the recording path, so it may allocate (through Tally itself); the thread
//! runs with the profiler's guard set, so its own allocations are never sampled.

use std::collections::HashMap;
use std::io::Write;
use std::string::String;
use std::vec::Vec;

use core::ffi::{c_int, c_void};

use flate2::write::GzEncoder;
use flate2::Compression;
use tally_format::pprof::{MappingInfo, PprofBuilder};
use tally_profiler::PROFILER;

use crate::prof_hooks;

/// An executable file mapping of the process.
struct Mapping {
    start: u64,
    end: u64,
    offset: u64,
    path: String,
    build_id: Vec<u8>,
}

/// The gzipped profile of the live sampled heap now (an empty profile when the profiler is
/// off).
pub fn live_heap() -> Vec<u8> {
    prof_hooks::unsampled(|| {
        let bytes = encode();
        let mut gzip = GzEncoder::new(Vec::new(), Compression::default());
        // Writing to a Vec cannot fail.
        let _ = gzip.write_all(&bytes);
        gzip.finish().unwrap_or_default()
    })
}

/// The uncompressed `Profile` message.
fn encode() -> Vec<u8> {
    let accum = PROFILER.accum_enabled();
    let types: &[(&str, &str)] = if accum {
        &[
            ("alloc_objects", "count"),
            ("alloc_space", "bytes"),
            ("inuse_objects", "count"),
            ("inuse_space", "bytes"),
        ]
    } else {
        &[("inuse_objects", "count"), ("inuse_space", "bytes")]
    };
    let mut profile = PprofBuilder::new(types);
    let mappings = executable_mappings();
    let ids: Vec<u64> = mappings
        .iter()
        .map(|m| {
            profile.mapping(&MappingInfo {
                start: m.start,
                end: m.end,
                offset: m.offset,
                path: &m.path,
                build_id: &m.build_id,
                symbolized: (false, false, false, false),
            })
        })
        .collect();
    let on = prof_hooks::profiler_on();
    let mut locations: HashMap<usize, u64> = HashMap::new();
    let mut stack = Vec::new();
    for s in PROFILER.stacks.iter().filter(|_| on) {
        if s.live.bytes <= 0.0 && !(accum && s.accum.bytes > 0.0) {
            continue;
        }
        stack.clear();
        for &frame in s.frames {
            let next = locations.len();
            let id = *locations.entry(frame).or_insert_with(|| {
                let address = frame.wrapping_sub(1) as u64;
                let mapping = mappings
                    .iter()
                    .position(|m| m.start <= address && address < m.end)
                    .map(|i| ids[i]);
                let id = profile.location(address, mapping, &[]);
                debug_assert_eq!(id, next as u64 + 1);
                id
            });
            stack.push(id);
        }
        let (objects, bytes) = (s.live.objects.round() as i64, s.live.bytes.round() as i64);
        if accum {
            let values = [
                s.accum.objects.round() as i64,
                s.accum.bytes.round() as i64,
                objects,
                bytes,
            ];
            profile.sample(&stack, &values);
        } else {
            profile.sample(&stack, &[objects, bytes]);
        }
    }
    let period = if on { PROFILER.period() } else { 0 };
    profile.finish(
        ("space", "bytes"),
        period,
        "live heap, written by Tally in the process",
        "inuse_space",
    )
}

/// The executable file mappings of `/proc/self/maps`, each with its object's build id.
fn executable_mappings() -> Vec<Mapping> {
    let objects = loaded_objects();
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
    maps.lines()
        .filter_map(|line| {
            let mut fields = line.split_ascii_whitespace();
            let range = fields.next()?;
            let perms = fields.next()?;
            let offset = fields.next()?;
            let (_device, _inode) = (fields.next()?, fields.next()?);
            let path: Vec<&str> = fields.collect();
            let path = path.join(" ");
            if !perms.contains('x') || !path.starts_with('/') {
                return None;
            }
            let (start, end) = range.split_once('-')?;
            let start = u64::from_str_radix(start, 16).ok()?;
            let build_id = objects
                .iter()
                .find(|o| o.lo <= start && start < o.hi)
                .map(|o| o.id[..o.len].to_vec())
                .unwrap_or_default();
            Some(Mapping {
                start,
                end: u64::from_str_radix(end, 16).ok()?,
                offset: u64::from_str_radix(offset, 16).ok()?,
                path,
                build_id,
            })
        })
        .collect()
}

/// A loaded object's address range and build id (`len` bytes of `id`; `usize::MAX`: an unused
/// entry).
#[derive(Clone, Copy)]
struct Object {
    lo: u64,
    hi: u64,
    id: [u8; 64],
    len: usize,
}

const MAX_OBJECTS: usize = 512;

/// Every loaded object's range and build id, read from the program headers and notes the
/// loader maps. Collected into a fixed array: the loader holds its lock during the callback,
/// so nothing there may allocate.
fn loaded_objects() -> Vec<Object> {
    let mut objects = [Object {
        lo: 0,
        hi: 0,
        id: [0; 64],
        len: usize::MAX,
    }; MAX_OBJECTS];
    let mut n = 0usize;
    let mut state = (&mut objects, &mut n);
    // SAFETY: the callback matches dl_iterate_phdr's contract and only reads what the loader
    // hands it; `state` outlives the call.
    unsafe {
        libc::dl_iterate_phdr(
            Some(visit_object),
            (&mut state as *mut (&mut [Object; MAX_OBJECTS], &mut usize)).cast(),
        )
    };
    objects[..n].to_vec()
}

unsafe extern "C" fn visit_object(info: *mut libc::dl_phdr_info, _size: usize, data: *mut c_void) -> c_int {
    // SAFETY: `data` is `loaded_objects`' state; `info` the loader's description of one object,
    // whose program headers and loaded segments are mapped and readable.
    unsafe {
        let (objects, n) = &mut *data.cast::<(&mut [Object; MAX_OBJECTS], &mut usize)>();
        if **n == MAX_OBJECTS {
            return 1;
        }
        let info = &*info;
        let base = info.dlpi_addr;
        let mut object = Object {
            lo: u64::MAX,
            hi: 0,
            id: [0; 64],
            len: 0,
        };
        for i in 0..info.dlpi_phnum as usize {
            let ph = &*info.dlpi_phdr.add(i);
            let start = base.wrapping_add(ph.p_vaddr);
            match ph.p_type {
                libc::PT_LOAD => {
                    object.lo = object.lo.min(start);
                    object.hi = object.hi.max(start.wrapping_add(ph.p_memsz));
                }
                libc::PT_NOTE if object.len == 0 => {
                    object.len = gnu_build_id(start as *const u8, ph.p_memsz as usize, &mut object.id);
                }
                _ => {}
            }
        }
        if object.lo < object.hi {
            objects[**n] = object;
            **n += 1;
        }
        0
    }
}

/// Copies the `NT_GNU_BUILD_ID` note's descriptor among the notes at `notes` (`size` bytes)
/// into `out`; returns its length (0: none, or longer than `out`).
///
/// # Safety
/// `notes` must be readable for `size` bytes.
unsafe fn gnu_build_id(notes: *const u8, size: usize, out: &mut [u8; 64]) -> usize {
    // SAFETY: per the contract.
    let notes = unsafe { core::slice::from_raw_parts(notes, size) };
    let word = |at: usize| {
        notes
            .get(at..at + 4)
            .map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]) as usize)
    };
    let mut at = 0;
    while let (Some(namesz), Some(descsz), Some(kind)) = (word(at), word(at + 4), word(at + 8)) {
        let name = at + 12;
        let desc = name + namesz.next_multiple_of(4);
        let next = desc + descsz.next_multiple_of(4);
        if next > notes.len() {
            return 0;
        }
        if kind == 3 && notes[name..name + namesz] == *b"GNU\0" && descsz <= out.len() {
            out[..descsz].copy_from_slice(&notes[desc..desc + descsz]);
            return descsz;
        }
        at = next;
    }
    0
}
