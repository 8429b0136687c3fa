//! From a frame address in a dump to a [`Location`]: function names, source lines and inlined
//! frames, offline, from the files named in the dump's memory map.
//!
//! For an address `a` in a mapping `[start, end)` of file `F` at file offset `off`:
//! 1. the byte's offset in `F` is `a − start + off`;
//! 2. `F`'s `PT_LOAD` segment holding that byte gives the ELF virtual address
//!    `offset − p_offset + p_vaddr` (this covers executables, PIE and shared objects alike);
//! 3. DWARF (in `F` or its separate debug file) gives the inline chain with file:line;
//!    the symbol tables give the function where DWARF is missing.
//!
//! An address nothing resolves prints as `libfoo.so+0x1234`: the virtual address inside the
//! file when the file could be read (what `addr2line -e libfoo.so 0x1234` takes), the file offset
//! otherwise; an address in no file mapping prints as itself.
//!
//! An address in anonymous executable memory is JIT code: a perf map
//! ([`tally_format::perf_map`]) names it, when one was given for the dump's address space
//! ([`Symbolizer::add_jit_names`]) and has an entry that covers the address and lies wholly in
//! the same mapping (an entry that straddles mappings, or lies outside them, belongs to another
//! address space); an entry naming an inline chain (Tally's JVM agent's) gives the location
//! its frames, innermost first, as DWARF does for native code. An address no entry covers keeps
//! its hex label, never a neighbour's name, and
//! [`Symbolizer::take_warnings`] says once how to get a map.
//!
//! Every file is loaded once, and every (file, offset) is resolved once: a [`Symbolizer`] keeps
//! both caches across all the dumps of one report (`--base` reads two). Equal locations are
//! interned to one [`LocationId`], so later stages compare and hash small integers.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use crate::memory_map::{MemoryMap, Place};
use crate::object_file::{ObjectFile, SourceFrame};
use tally_format::frames as allocator_frames;
use tally_format::perf_map::PerfMap;

/// One level of a location's inline chain.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Frame {
    /// The function, demangled; for an unresolved address, its `file+0x…` label.
    pub function: String,
    /// The source file, when DWARF says.
    pub file: Option<String>,
    /// The source line (0 when unknown).
    pub line: u32,
}

/// What one code address is: a chain of frames, innermost (an inlined callee) first, the last
/// being the function the code was compiled into. Never empty.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Location {
    /// The inline chain.
    pub frames: Vec<Frame>,
    /// Whether the function the code belongs to is an allocation entry point (`malloc`,
    /// `operator new`, `__rust_alloc`, …) under any of its names.
    pub allocator: bool,
    /// When the code lies in a shared library other than the program that exports `malloc`
    /// (`libtally.so`, `libjemalloc.so.2`, but also the C library), that library: a stack's
    /// innermost frames that lie in the same one as its first frame are the allocator's own,
    /// named or not.
    pub malloc_library: Option<u32>,
    /// Whether anything was resolved (false: the one frame is a `file+0x…` label).
    pub resolved: bool,
    /// Whether this is JIT code a perf map named (or the placeholder for unnamed JIT code).
    pub jit: bool,
}

impl Location {
    /// Whether the address lay in no mapping of a file and no named mapping, and no perf map
    /// named it: JIT code without a name (a JVM's compiled Java with no perf map), or a damaged
    /// frame. Its hex label changes when the JIT compiles the code again; a location a perf map
    /// named is not anonymous.
    pub fn is_anonymous(&self) -> bool {
        !self.resolved && self.frames.len() == 1 && self.frames[0].function.starts_with("0x")
    }

    /// Whether this is code in anonymous memory, named by a perf map or not: a JIT compiler's,
    /// whose frames for one call site change as the runtime compiles its methods again.
    pub fn is_jit_code(&self) -> bool {
        self.jit || self.is_anonymous()
    }
}

/// Index of an interned [`Location`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LocationId(u32);

/// How to find files.
#[derive(Debug, Clone, Default)]
pub struct SymbolizerOptions {
    /// Roots searched for separate debug files (`/usr/lib/debug` if empty).
    pub debug_dirs: Vec<PathBuf>,
    /// The program, when given on the command line: used instead of the mapped file of the same
    /// name (a binary moved, or rebuilt with the same code, since the dump was written).
    pub binary: Option<PathBuf>,
}

/// What names the JIT code of one address space (one dump's memory map).
#[derive(Debug, Clone, Default)]
pub struct JitNames {
    /// The perf map, if one was found and passed its checks.
    pub map: Option<Rc<PerfMap>>,
    /// Why JIT code stays unnamed and how to get a map: the one warning printed when an address
    /// in anonymous executable memory is left as hex.
    pub hint: String,
}

/// The hint when nothing was said about an address space: how to get perf maps.
pub const JIT_HINT: &str = "no perf map was given; run the program under `tally run`, or give --perf-map \
                            /tmp/perf-<pid>.map (JVM: -agentpath:libtally_jvm.so, or \
                            -XX:+UnlockDiagnosticVMOptions -XX:+DumpPerfMapAtExit; node: --perf-basic-prof-only-functions)";

/// A file from a memory map, loaded or not.
struct LoadedFile {
    object: Option<ObjectFile>,
    /// See [`Location::malloc_library`].
    malloc_library: bool,
    /// The label prefix for unresolved addresses: the file name.
    short_name: String,
}

/// Turns addresses into locations, caching everything it reads.
pub struct Symbolizer {
    debug_dirs: Vec<PathBuf>,
    binary: Option<PathBuf>,
    binary_used: bool,
    files: Vec<LoadedFile>,
    file_ids: HashMap<String, usize>,
    resolved: HashMap<(usize, u64), LocationId>,
    locations: Vec<Location>,
    location_ids: HashMap<Location, LocationId>,
    /// Per location, the first address it was looked up at (for formats that keep addresses).
    first_addresses: Vec<u64>,
    warnings: Vec<String>,
    /// Perf maps by [`MemoryMap::key`].
    jit_names: HashMap<u64, JitNames>,
    /// JIT code addresses left unnamed, and the hint of the first.
    jit_unnamed: HashSet<u64>,
    jit_hint: Option<String>,
}

impl Symbolizer {
    /// A symbolizer with empty caches.
    pub fn new(options: SymbolizerOptions) -> Symbolizer {
        let debug_dirs = if options.debug_dirs.is_empty() {
            vec![PathBuf::from("/usr/lib/debug")]
        } else {
            options.debug_dirs
        };
        Symbolizer {
            debug_dirs,
            binary: options.binary,
            binary_used: false,
            files: Vec::new(),
            file_ids: HashMap::new(),
            resolved: HashMap::new(),
            locations: Vec::new(),
            location_ids: HashMap::new(),
            first_addresses: Vec::new(),
            warnings: Vec::new(),
            jit_names: HashMap::new(),
            jit_unnamed: HashSet::new(),
            jit_hint: None,
        }
    }

    /// Names the JIT code of the address space `map` with `names` (replacing what was given for
    /// it before).
    pub fn add_jit_names(&mut self, map: &MemoryMap, names: JitNames) {
        self.jit_names.insert(map.key(), names);
    }

    /// The location of frame `address` of a stack whose memory map is `map`. `address` is the
    /// one to look up: the caller has already turned return addresses into call addresses.
    pub fn symbolize(&mut self, map: &MemoryMap, address: u64) -> LocationId {
        let id = self.symbolize_place(map, address);
        if self.first_addresses.len() <= id.0 as usize {
            self.first_addresses.resize(id.0 as usize + 1, address);
        }
        id
    }

    fn symbolize_place(&mut self, map: &MemoryMap, address: u64) -> LocationId {
        match map.place(address) {
            Place::File { path, offset } => {
                let is_program = map.main_program() == Some(path);
                let file = self.file_id(path, is_program);
                if let Some(&id) = self.resolved.get(&(file, offset)) {
                    return id;
                }
                let location = self.resolve(file, offset);
                let id = self.intern(location);
                self.resolved.insert((file, offset), id);
                id
            }
            Place::Special { name, offset } => self.intern(unresolved(format!("{name}+{offset:#x}"))),
            Place::Unknown => {
                if let Some(location) = self.jit_location(map, address) {
                    return self.intern(location);
                }
                self.intern(unresolved(format!("{address:#x}")))
            }
        }
    }

    /// The location of JIT code at `address` from the address space's perf map; `None` (and a
    /// hint kept) when `address` is in anonymous executable memory but no entry names it.
    fn jit_location(&mut self, map: &MemoryMap, address: u64) -> Option<Location> {
        let mapping = map.jit_mapping(address)?;
        let names = self.jit_names.get(&map.key());
        let named = names.and_then(|names| {
            let perf_map = names.map.as_ref()?;
            let entry = perf_map.lookup(address)?;
            (mapping.start <= entry.start && entry.end <= mapping.end)
                .then(|| perf_map.readable_frames(entry))
        });
        match named {
            Some(functions) => Some(Location {
                frames: functions
                    .into_iter()
                    .map(|function| Frame {
                        function,
                        file: None,
                        line: 0,
                    })
                    .collect(),
                allocator: false,
                malloc_library: None,
                resolved: true,
                jit: true,
            }),
            None => {
                self.jit_unnamed.insert(address);
                if self.jit_hint.is_none() {
                    let hint = names.map(|n| n.hint.as_str()).filter(|h| !h.is_empty());
                    self.jit_hint = Some(hint.unwrap_or(JIT_HINT).to_string());
                }
                None
            }
        }
    }

    /// The location of a made-up frame named `name` (a placeholder for frames folded together;
    /// `jit`: for frames of JIT code).
    pub fn placeholder(&mut self, name: &str, jit: bool) -> LocationId {
        self.intern(Location {
            resolved: true,
            jit,
            ..unresolved(name.to_string())
        })
    }

    /// The interned location `id`.
    pub fn location(&self, id: LocationId) -> &Location {
        &self.locations[id.0 as usize]
    }

    /// The first address `id` was looked up at (a call address: return addresses have had 1
    /// subtracted). Two addresses that resolve alike share a location, so this is one of them.
    pub fn first_address(&self, id: LocationId) -> u64 {
        self.first_addresses.get(id.0 as usize).copied().unwrap_or(0)
    }

    /// The build id of the mapped file `path`, if it was loaded and has one.
    pub fn build_id(&self, path: &str) -> Option<&[u8]> {
        let &file = self.file_ids.get(path)?;
        self.files[file].object.as_ref()?.build_id.as_deref()
    }

    /// Number of distinct locations so far.
    pub fn location_count(&self) -> usize {
        self.locations.len()
    }

    /// Warnings gathered so far (files that could not be read, debug files refused, a BINARY
    /// that matched nothing), each one line; takes them out.
    pub fn take_warnings(&mut self) -> Vec<String> {
        if let (Some(binary), false) = (&self.binary, self.binary_used) {
            if !self.files.is_empty() {
                self.warnings.push(format!(
                    "{}: no file of that name is mapped in the dump; symbolizing from the dump's \
                     paths",
                    binary.display()
                ));
                self.binary_used = true;
            }
        }
        if let Some(hint) = self.jit_hint.take() {
            let count = self.jit_unnamed.len();
            let frames = if count == 1 { "frame" } else { "frames" };
            self.warnings.push(format!(
                "{count} {frames} in anonymous executable memory (JIT code) print as addresses: {hint}"
            ));
        }
        std::mem::take(&mut self.warnings)
    }

    fn intern(&mut self, location: Location) -> LocationId {
        if let Some(&id) = self.location_ids.get(&location) {
            return id;
        }
        let id = LocationId(u32::try_from(self.locations.len()).expect("fewer than 2^32 locations"));
        self.locations.push(location.clone());
        self.location_ids.insert(location, id);
        id
    }

    /// The id of the mapped file `path`, loading it on first use.
    fn file_id(&mut self, path: &str, is_program: bool) -> usize {
        if let Some(&id) = self.file_ids.get(path) {
            return id;
        }
        let mut source = PathBuf::from(path);
        if let Some(binary) = &self.binary {
            if same_file_name(binary, Path::new(path)) {
                source = binary.clone();
                self.binary_used = true;
            }
        }
        let object = match ObjectFile::load(&source, &self.debug_dirs) {
            Ok(object) => {
                for note in &object.notes {
                    self.warnings.push(note.clone());
                }
                Some(object)
            }
            Err(e) => {
                self.warnings.push(format!(
                    "{}: {e}; its frames print as {}+0x<offset>",
                    source.display(),
                    short_name(path)
                ));
                None
            }
        };
        let id = self.files.len();
        let malloc_library = !is_program && object.as_ref().is_some_and(|o| o.exports_malloc);
        self.files.push(LoadedFile {
            object,
            malloc_library,
            short_name: short_name(path),
        });
        self.file_ids.insert(path.to_string(), id);
        id
    }

    /// Resolves byte `offset` of file `file`.
    fn resolve(&self, file: usize, offset: u64) -> Location {
        let loaded = &self.files[file];
        let unknown = |at: u64| Location {
            malloc_library: loaded.malloc_library.then_some(file as u32),
            ..unresolved(format!("{}+{at:#x}", loaded.short_name))
        };
        let Some(object) = &loaded.object else {
            return unknown(offset);
        };
        let Some(address) = object.address_of_offset(offset) else {
            return unknown(offset);
        };
        let lookup = object.lookup(address);
        if lookup.frames.is_empty() {
            return unknown(address);
        }
        let label = || format!("{}+{address:#x}", loaded.short_name);
        let frames: Vec<Frame> = lookup
            .frames
            .into_iter()
            .map(|SourceFrame { function, file, line }| Frame {
                function: function.unwrap_or_else(label),
                file,
                line,
            })
            .collect();
        let outer = &frames.last().expect("not empty").function;
        let allocator = allocator_frames::is_entry_point(outer)
            || lookup
                .symbol_names
                .iter()
                .any(|name| allocator_frames::is_entry_point(name));
        Location {
            frames,
            allocator,
            malloc_library: loaded.malloc_library.then_some(file as u32),
            resolved: true,
            jit: false,
        }
    }
}

/// A location known only by its label.
fn unresolved(label: String) -> Location {
    Location {
        frames: vec![Frame {
            function: label,
            file: None,
            line: 0,
        }],
        allocator: false,
        malloc_library: None,
        resolved: false,
        jit: false,
    }
}

/// The last component of a path, for labels.
fn short_name(path: &str) -> String {
    Path::new(path)
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.to_string())
}

/// Whether two paths name the same file, or files of the same name.
fn same_file_name(a: &Path, b: &Path) -> bool {
    if a == b {
        return true;
    }
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(x), Ok(y)) if x == y => return true,
        _ => {}
    }
    a.file_name().is_some() && a.file_name() == b.file_name()
}
