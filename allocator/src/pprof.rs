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
//! return address points past its call; pprof asks for an address inside the instruction),
//! each with its function named from the object's symbol table ([`crate::symbols`]: the
//! readable name, and the raw one as the system name), so that a tool that reads no object
//! files (Pyroscope) shows names; every mapping says its functions are named (`has_functions`:
//! what its file's symbols do not name, nobody names from that file). `go tool pprof -symbolize=force` adds files and lines from the local
//! binaries. Code a JIT compiler wrote (outside every file mapping) is named from the process's
//! perf map when there is one (`/tmp/perf-<pid>.map`: a JVM with Tally's agent names Java
//! methods, with the chains of methods C2 inlined as several frames of one location, as the
//! report reads them). A location nothing names is left to the tools (Parca names such frames, with
//! lines, from debug information found by build id; it leaves named ones as they are).
//!
//! Each stack starts at the function that asked for memory, as in the report: the allocator's
//! entry points and everything inside them (`malloc`, `__rust_alloc`, Tally's own functions)
//! and Rust's allocation machinery right outside them (`RawVec`, `Box`) are left out
//! (`tally_format::frames`).
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
use tally_format::frames;
use tally_format::perf_map::PerfMap;
use tally_format::pprof::{MappingInfo, PprofBuilder};
use tally_profiler::PROFILER;

use crate::prof_hooks;
use crate::symbols::{self, SymbolTable};

/// An executable file mapping of the process.
struct Mapping {
    start: u64,
    end: u64,
    offset: u64,
    path: String,
    build_id: Vec<u8>,
    /// The object's load bias: a process address minus this is an address of the file.
    bias: u64,
}

/// The gzipped profile of the live sampled heap now (an empty profile when the profiler is
/// off), shown by default as `inuse_space`, or with `allocs` as `alloc_space` where
/// `prof_accum` keeps it (Go's `/debug/pprof/allocs`: the same profile, another first view).
pub fn live_heap(allocs: bool) -> Vec<u8> {
    prof_hooks::unsampled(|| {
        let bytes = encode(allocs);
        let mut gzip = GzEncoder::new(Vec::new(), Compression::default());
        // Writing to a Vec cannot fail.
        let _ = gzip.write_all(&bytes);
        gzip.finish().unwrap_or_default()
    })
}

/// The uncompressed `Profile` message.
fn encode(allocs: bool) -> Vec<u8> {
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
    let mut names = Namer::new(executable_mappings());
    let on = prof_hooks::profiler_on();
    // Each frame's location (by address); each function's id (by raw name).
    let mut locations: HashMap<usize, u64> = HashMap::new();
    let mut functions: HashMap<String, u64> = HashMap::new();
    let mut samples: Vec<(Vec<usize>, [i64; 4])> = Vec::new();
    for s in PROFILER.stacks.iter().filter(|_| on) {
        if s.live.bytes <= 0.0 && !(accum && s.accum.bytes > 0.0) {
            continue;
        }
        let (objects, bytes) = (s.live.objects.round() as i64, s.live.bytes.round() as i64);
        let values = if accum {
            [
                s.accum.objects.round() as i64,
                s.accum.bytes.round() as i64,
                objects,
                bytes,
            ]
        } else {
            [objects, bytes, 0, 0]
        };
        let first = names.first_caller(s.frames);
        samples.push((s.frames[first..].to_vec(), values));
    }
    // Mappings first (their ids are their positions plus one), each marked as named
    // (`has_functions`): what its file's symbols name is named, and what they do not cannot be
    // named from the same file by anyone else. A mapping not so marked sends `go tool pprof` to
    // ask the server for names (`POST /debug/pprof/symbol`), and it gives up on the whole
    // profile when that fails; `-symbolize=force` still names from local files.
    for (i, m) in names.mappings.iter().enumerate() {
        let id = profile.mapping(&MappingInfo {
            start: m.start,
            end: m.end,
            offset: m.offset,
            path: &m.path,
            build_id: &m.build_id,
            symbolized: (true, false, false, false),
        });
        debug_assert_eq!(id, i as u64 + 1);
    }
    let mut stack = Vec::new();
    for (frames, values) in &samples {
        stack.clear();
        for &frame in frames {
            let next = locations.len() as u64 + 1;
            let id = *locations.entry(frame).or_insert_with(|| {
                let address = frame.wrapping_sub(1) as u64;
                let mapping = names.mapping_of(address).map(|i| i as u64 + 1);
                let lines: Vec<(u64, u32)> = names
                    .name(address)
                    .map(|name| {
                        name.frames
                            .iter()
                            .map(|(readable, system)| {
                                let id = *functions
                                    .entry(system.clone())
                                    .or_insert_with(|| profile.function_named(readable, system, None));
                                (id, 0)
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                let id = profile.location(address, mapping, &lines);
                debug_assert_eq!(id, next);
                id
            });
            stack.push(id);
        }
        profile.sample(&stack, &values[..types.len()]);
    }
    let period = if on { PROFILER.period() } else { 0 };
    profile.finish(
        ("space", "bytes"),
        period,
        "live heap, written by Tally in the process",
        if allocs && accum {
            "alloc_space"
        } else {
            "inuse_space"
        },
    )
}

/// The frames of one location, innermost first (more than one: an inline chain a JIT's perf
/// map wrote), each as (readable name, system name: the symbol as written).
struct Name {
    frames: Vec<(String, String)>,
}

/// Names code addresses: which mapping holds one and, from its object's symbol table (read
/// the first time the object is asked about), which function; code outside every file mapping
/// (a JIT's) from the process's perf map, `/tmp/perf-<pid>.map`, when one is written (a JVM
/// with Tally's agent, `node --perf-basic-prof`, `python3 -X perf`). Each address is named once.
struct Namer {
    mappings: Vec<Mapping>,
    /// Per mapping: its symbol table, once read (`None` inside: none could be read). The
    /// mappings of one object share the first one's.
    tables: Vec<Option<Option<SymbolTable>>>,
    /// The perf map, once read (`None` inside: there is none).
    perf_map: Option<Option<PerfMap>>,
    names: HashMap<u64, Option<Name>>,
}

impl Namer {
    fn new(mappings: Vec<Mapping>) -> Namer {
        let tables = mappings.iter().map(|_| None).collect();
        Namer {
            mappings,
            tables,
            perf_map: None,
            names: HashMap::new(),
        }
    }

    fn mapping_of(&self, address: u64) -> Option<usize> {
        self.mappings
            .iter()
            .position(|m| m.start <= address && address < m.end)
    }

    /// The first mapping of the object mapping `i` belongs to.
    fn owner(&self, i: usize) -> usize {
        let m = &self.mappings[i];
        self.mappings
            .iter()
            .position(|o| o.path == m.path && o.bias == m.bias)
            .unwrap_or(i)
    }

    /// The function holding `address`, if its object's symbols say.
    fn name(&mut self, address: u64) -> Option<&Name> {
        if !self.names.contains_key(&address) {
            let name = self.look_up(address);
            self.names.insert(address, name);
        }
        self.names.get(&address)?.as_ref()
    }

    fn look_up(&mut self, address: u64) -> Option<Name> {
        let Some(mapping) = self.mapping_of(address) else {
            let map = self.perf_map.get_or_insert_with(own_perf_map);
            let map = map.as_ref()?;
            let entry = map.lookup(address)?;
            let frames = map
                .readable_frames(entry)
                .into_iter()
                .map(|frame| (frame.clone(), frame))
                .collect();
            return Some(Name { frames });
        };
        let owner = self.owner(mapping);
        let m = &self.mappings[owner];
        let table = self.tables[owner].get_or_insert_with(|| SymbolTable::load(&m.path, &m.build_id));
        let raw = table.as_ref()?.lookup(address.wrapping_sub(m.bias))?;
        Some(Name {
            frames: std::vec![(symbols::readable(raw), raw.into())],
        })
    }

    /// Where the program's own frames start in `frames` (innermost first): past the last
    /// allocation entry point (`malloc`, `operator new`, `__rust_alloc`, Tally's own functions)
    /// and then Rust's allocation machinery right outside it (`RawVec`, `Box`...), as the report
    /// drops them, so that the first frame is the function that asked for memory. At least the
    /// outermost frame stays.
    fn first_caller(&mut self, frames: &[usize]) -> usize {
        let mut first = 0;
        for (i, &pc) in frames.iter().enumerate() {
            if self
                .name(pc.wrapping_sub(1) as u64)
                .is_some_and(|n| n.frames.iter().any(|(f, _)| frames::is_entry_point(f)))
            {
                first = i + 1;
            }
        }
        if first > 0 {
            while first < frames.len()
                && self
                    .name(frames[first].wrapping_sub(1) as u64)
                    .is_some_and(|n| n.frames.iter().all(|(f, _)| frames::is_rust_alloc_machinery(f)))
            {
                first += 1;
            }
        }
        first.min(frames.len().saturating_sub(1))
    }
}

/// This process's perf map, `/tmp/perf-<pid>.map`, if there is one that this process wrote: owned
/// by its user (`/tmp` is everyone's) and written since it started (not left by an earlier
/// process that had the same pid).
fn own_perf_map() -> Option<PerfMap> {
    use std::os::unix::fs::MetadataExt;
    let path = std::format!("/tmp/perf-{}.map", tally_pal::pid());
    let meta = std::fs::metadata(&path).ok()?;
    // SAFETY: geteuid has no preconditions.
    if meta.uid() != unsafe { libc::geteuid() } {
        return None;
    }
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let proc_stat = std::fs::read_to_string("/proc/stat").ok()?;
    // SAFETY: sysconf only reads a configuration value.
    let ticks = u64::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) }).ok()?;
    let started = tally_format::perf_map::process_start(&stat, &proc_stat, ticks)?;
    // The start is known to the tick (10 ms); the file's time to the nanosecond.
    if meta.modified().ok()? + std::time::Duration::from_millis(20) < started {
        return None;
    }
    Some(PerfMap::parse(&std::fs::read(&path).ok()?))
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
            let object = objects.iter().find(|o| o.lo <= start && start < o.hi);
            let build_id = object.map(|o| o.id[..o.len].to_vec()).unwrap_or_default();
            Some(Mapping {
                start,
                end: u64::from_str_radix(end, 16).ok()?,
                offset: u64::from_str_radix(offset, 16).ok()?,
                path,
                build_id,
                bias: object.map_or(0, |o| o.base),
            })
        })
        .collect()
}

/// A loaded object's address range, load bias and build id (`len` bytes of `id`; `usize::MAX`:
/// an unused entry).
#[derive(Clone, Copy)]
struct Object {
    lo: u64,
    hi: u64,
    base: u64,
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
        base: 0,
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
            base,
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
