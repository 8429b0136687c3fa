//! One mapped ELF file, loaded once: its loadable segments (to turn file offsets into the virtual
//! addresses its symbols and DWARF use), its symbol tables, and its DWARF, from the file itself or
//! from a separate debug file.
//!
//! Separate debug files are looked up the way GDB does it: first by build id,
//! `<debug dir>/.build-id/<xx>/<rest>.debug`, then by the `.gnu_debuglink` name next to the file,
//! in its `.debug/` directory and under `<debug dir>/<file's directory>/`. A candidate whose build
//! id differs from the file's is refused. A debug file made by `dwz` names its supplementary file
//! in `.gnu_debugaltlink`; that one is loaded too. The default debug directory is
//! `/usr/lib/debug`, where Debian's `-dbg`/`-dbgsym` packages install.

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use object::{
    CompressionFormat, Object, ObjectSection, ObjectSegment, ObjectSymbol, SectionFlags, SymbolFlags,
    SymbolKind,
};

use tally_format::demangle::demangle;

/// The byte reader DWARF is parsed with: a shared, reference-counted view of a loaded file.
type Reader = gimli::EndianArcSlice<gimli::RunTimeEndian>;

/// Files larger than this are not loaded (a mapped `/proc/kcore` or a damaged path).
const MAX_FILE_SIZE: u64 = 4 << 30;

/// A `PT_LOAD` segment: file bytes `[offset, offset + size)` are mapped at virtual address
/// `address`.
#[derive(Debug, Clone, Copy)]
struct Segment {
    offset: u64,
    size: u64,
    address: u64,
}

/// A function symbol; `size` 0 means unknown (it then covers up to the next symbol).
#[derive(Debug, Clone)]
struct Symbol {
    address: u64,
    size: u64,
    /// Preference among symbols at the same address: lower is better (global, no leading `_`).
    rank: u8,
    name: Box<str>,
}

/// One level of a code location: the function (demangled), and the source line when known.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SourceFrame {
    /// Demangled function name, if known.
    pub function: Option<String>,
    /// Source file, if known.
    pub file: Option<String>,
    /// Source line (0 if unknown).
    pub line: u32,
}

/// What is known about one virtual address of the file.
#[derive(Debug, Clone, Default)]
pub struct Lookup {
    /// Inline chain, innermost (inlined callee) first; the last frame is the function the code
    /// was compiled in. Empty when nothing is known.
    pub frames: Vec<SourceFrame>,
    /// Demangled names of every symbol-table symbol at the enclosing symbol's address (aliases
    /// such as `malloc` and `__libc_malloc`).
    pub symbol_names: Vec<String>,
}

/// A loaded ELF file.
pub struct ObjectFile {
    segments: Vec<Segment>,
    /// Sorted by (address, rank).
    symbols: Vec<Symbol>,
    dwarf: Option<addr2line::Context<Reader>>,
    /// Where the DWARF came from, when not from the file itself.
    pub debug_file: Option<PathBuf>,
    /// Things worth telling the user (a debug file that did not match, DWARF that did not parse).
    pub notes: Vec<String>,
    /// Whether the file exports `malloc` (its dynamic symbol table defines it): an allocator
    /// library such as `libtally.so` or `libjemalloc.so.2`, or a C library.
    pub exports_malloc: bool,
    /// The GNU build id (`NT_GNU_BUILD_ID`), when the file has one.
    pub build_id: Option<Vec<u8>>,
}

impl std::fmt::Debug for ObjectFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectFile")
            .field("segments", &self.segments)
            .field("symbols", &self.symbols.len())
            .field("dwarf", &self.dwarf.is_some())
            .field("debug_file", &self.debug_file)
            .finish()
    }
}

/// Reads a regular file, refusing devices, FIFOs and files too large to be an object file.
fn read_file(path: &Path) -> Result<Arc<[u8]>, String> {
    let metadata = std::fs::metadata(path).map_err(io_message)?;
    if !metadata.is_file() {
        return Err("not a regular file".into());
    }
    if metadata.len() > MAX_FILE_SIZE {
        return Err(format!("too large ({} bytes)", metadata.len()));
    }
    std::fs::read(path).map(Arc::from).map_err(io_message)
}

/// An I/O error without the "(os error N)" tail.
pub fn io_message(error: std::io::Error) -> String {
    let text = error.to_string();
    match text.find(" (os error") {
        Some(end) => text[..end].to_string(),
        None => text,
    }
}

/// Why `data` did not parse: "not an ELF file", or, when it starts like one, what is damaged
/// (`a damaged ELF file (Invalid ELF section header offset/size/alignment)`).
fn damaged_or_foreign(data: &[u8], error: object::Error) -> String {
    if data.starts_with(b"\x7fELF") {
        format!("a damaged ELF file ({error})")
    } else {
        "not an ELF file".to_string()
    }
}

impl ObjectFile {
    /// Loads `path`, looking for separate debug information under `debug_dirs`.
    pub fn load(path: &Path, debug_dirs: &[PathBuf]) -> Result<ObjectFile, String> {
        let data = read_file(path)?;
        let file = object::File::parse(&*data).map_err(|e| damaged_or_foreign(&data, e))?;
        let mut notes = Vec::new();

        let segments = file
            .segments()
            .filter_map(|segment| {
                let (offset, size) = segment.file_range();
                (size > 0).then_some(Segment {
                    offset,
                    size,
                    address: segment.address(),
                })
            })
            .collect();

        let mut symbols = Vec::new();
        collect_symbols(&file, &mut symbols);
        let exports_malloc = file.dynamic_symbols().any(|symbol| {
            symbol.is_definition()
                && symbol.kind() == SymbolKind::Text
                && symbol.name().is_ok_and(|name| strip_version(name) == "malloc")
        });

        let build_id = file.build_id().ok().flatten().map(<[u8]>::to_vec);
        let mut dwarf = None;
        let mut debug_file = None;
        if has_dwarf(&file) {
            dwarf = load_dwarf(&data, &file, path, debug_dirs, &mut notes);
        } else if let Some((debug_path, debug_data)) =
            find_debug_file(path, &file, build_id.as_deref(), debug_dirs, &mut notes)
        {
            match object::File::parse(&*debug_data) {
                Ok(debug) => {
                    collect_symbols(&debug, &mut symbols);
                    if has_dwarf(&debug) {
                        dwarf = load_dwarf(&debug_data, &debug, &debug_path, debug_dirs, &mut notes);
                    }
                    debug_file = Some(debug_path);
                }
                Err(e) => notes.push(format!(
                    "{}: {}",
                    debug_path.display(),
                    damaged_or_foreign(&debug_data, e)
                )),
            }
        }

        symbols.sort_by(|a, b| (a.address, a.rank, &a.name).cmp(&(b.address, b.rank, &b.name)));
        symbols.dedup_by(|a, b| a.address == b.address && a.name == b.name);
        Ok(ObjectFile {
            segments,
            symbols,
            dwarf,
            debug_file,
            notes,
            exports_malloc,
            build_id,
        })
    }

    /// The virtual address (as symbols and DWARF see it) of byte `offset` of the file, if a
    /// loadable segment maps that byte.
    pub fn address_of_offset(&self, offset: u64) -> Option<u64> {
        self.segments
            .iter()
            .find(|s| offset >= s.offset && offset - s.offset < s.size)
            .map(|s| s.address.wrapping_add(offset - s.offset))
    }

    /// Whether a loadable segment maps virtual address `address` to a byte of the file (code
    /// always is; `.bss` is not).
    pub fn maps_address(&self, address: u64) -> bool {
        self.segments
            .iter()
            .any(|s| address >= s.address && address - s.address < s.size)
    }

    /// Whether the file has DWARF (its own or from a debug file).
    pub fn has_dwarf(&self) -> bool {
        self.dwarf.is_some()
    }

    /// Function, file:line and inlined frames at virtual address `address`.
    pub fn lookup(&self, address: u64) -> Lookup {
        let mut lookup = Lookup::default();
        if let Some(context) = &self.dwarf {
            if let Ok(mut frames) = context.find_frames(address).skip_all_loads() {
                while let Ok(Some(frame)) = frames.next() {
                    let function = frame
                        .function
                        .as_ref()
                        .and_then(|f| f.raw_name().ok())
                        .map(|name| demangle(&name[..]));
                    let (file, line) = match &frame.location {
                        Some(location) => (location.file.map(str::to_string), location.line.unwrap_or(0)),
                        None => (None, 0),
                    };
                    lookup.frames.push(SourceFrame { function, file, line });
                }
            }
        }
        let names = self.symbols_at(address);
        lookup.symbol_names = names.iter().map(|s| demangle(&s.name)).collect();
        match lookup.frames.last_mut() {
            Some(outer) if outer.function.is_none() => {
                outer.function = lookup.symbol_names.first().cloned();
            }
            None if !lookup.symbol_names.is_empty() => lookup.frames.push(SourceFrame {
                function: lookup.symbol_names.first().cloned(),
                file: None,
                line: 0,
            }),
            _ => {}
        }
        lookup
    }

    /// The symbols (aliases, best first) of the function symbol containing `address`.
    fn symbols_at(&self, address: u64) -> &[Symbol] {
        let end = self.symbols.partition_point(|s| s.address <= address);
        if end == 0 {
            return &[];
        }
        let at = self.symbols[end - 1].address;
        let start = self.symbols[..end].partition_point(|s| s.address < at);
        let group = &self.symbols[start..end];
        let size = group.iter().map(|s| s.size).max().unwrap_or(0);
        if size > 0 && address - at >= size {
            return &[];
        }
        group
    }
}

/// `name@VERSION` → `name`.
fn strip_version(name: &str) -> &str {
    name.split('@').next().unwrap_or(name)
}

/// Whether the file carries DWARF line or function information.
fn has_dwarf(file: &object::File<'_>) -> bool {
    file.section_by_name(".debug_info").is_some_and(|s| s.size() > 0)
}

/// Adds the function symbols of `.symtab` and `.dynsym`.
fn collect_symbols(file: &object::File<'_>, out: &mut Vec<Symbol>) {
    for symbol in file.symbols().chain(file.dynamic_symbols()) {
        // Functions, and untyped labels in executable sections (assembly such as ld.so's
        // `_dl_start_user`).
        let code = match symbol.kind() {
            SymbolKind::Text => true,
            SymbolKind::Unknown | SymbolKind::Label => symbol
                .section_index()
                .and_then(|index| file.section_by_index(index).ok())
                .is_some_and(
                    |section| matches!(section.flags(), SectionFlags::Elf { sh_flags } if sh_flags & 4 != 0),
                ),
            _ => false,
        };
        if !code || symbol.address() == 0 || symbol.section_index().is_none() {
            continue;
        }
        let Ok(name) = symbol.name() else { continue };
        if name.is_empty() {
            continue;
        }
        let weak = matches!(symbol.flags(), SymbolFlags::Elf { st_info, .. } if st_info >> 4 == 2);
        let rank = u8::from(!symbol.is_global()) * 4 + u8::from(weak) * 2 + u8::from(name.starts_with('_'));
        out.push(Symbol {
            address: symbol.address(),
            size: symbol.size(),
            rank,
            name: name.into(),
        });
    }
}

/// The reader for one section: a view of the file's bytes, or its decompressed copy.
fn section_reader(
    data: &Arc<[u8]>,
    file: &object::File<'_>,
    name: &str,
    endian: gimli::RunTimeEndian,
) -> Result<Reader, String> {
    let empty = || gimli::EndianReader::new(Arc::<[u8]>::from(&[][..]), endian);
    let Some(section) = file.section_by_name(name) else {
        return Ok(empty());
    };
    let compressed = section.compressed_file_range().map_err(|e| e.to_string())?;
    if compressed.format == CompressionFormat::None {
        return match section.file_range() {
            Some((offset, size)) => {
                let (start, end) = (offset as usize, offset.saturating_add(size) as usize);
                if end > data.len() {
                    return Err(format!("section {name} runs past the end of the file"));
                }
                Ok(gimli::EndianReader::new(data.clone(), endian).range(start..end))
            }
            None => Ok(empty()),
        };
    }
    match section.uncompressed_data().map_err(|e| format!("{name}: {e}"))? {
        Cow::Borrowed(bytes) => Ok(gimli::EndianReader::new(Arc::from(bytes), endian)),
        Cow::Owned(bytes) => Ok(gimli::EndianReader::new(Arc::from(bytes), endian)),
    }
}

/// Parses the DWARF of `file` (whose bytes are `data`), with its `dwz` supplementary file if it
/// names one.
fn load_dwarf(
    data: &Arc<[u8]>,
    file: &object::File<'_>,
    path: &Path,
    debug_dirs: &[PathBuf],
    notes: &mut Vec<String>,
) -> Option<addr2line::Context<Reader>> {
    let endian = if file.is_little_endian() {
        gimli::RunTimeEndian::Little
    } else {
        gimli::RunTimeEndian::Big
    };
    let loaded = gimli::Dwarf::load(|id| section_reader(data, file, id.name(), endian));
    let mut dwarf = match loaded {
        Ok(dwarf) => dwarf,
        Err(e) => {
            notes.push(format!(
                "{}: DWARF not readable ({e}); using symbols only",
                path.display()
            ));
            return None;
        }
    };
    if let Ok(Some((sup_name, sup_id))) = file.gnu_debugaltlink() {
        match load_supplementary(path, sup_name, sup_id, debug_dirs) {
            Ok(sup_data) => {
                if let Ok(sup_file) = object::File::parse(&*sup_data) {
                    let _ = dwarf.load_sup(|id| section_reader(&sup_data, &sup_file, id.name(), endian));
                }
            }
            Err(e) => notes.push(format!("{}: supplementary DWARF: {e}", path.display())),
        }
    }
    match addr2line::Context::from_dwarf(dwarf) {
        Ok(context) => Some(context),
        Err(e) => {
            notes.push(format!(
                "{}: DWARF not readable ({e}); using symbols only",
                path.display()
            ));
            None
        }
    }
}

/// Finds and reads the `dwz` supplementary file named by `.gnu_debugaltlink`.
fn load_supplementary(
    path: &Path,
    name: &[u8],
    build_id: &[u8],
    debug_dirs: &[PathBuf],
) -> Result<Arc<[u8]>, String> {
    let name = Path::new(std::str::from_utf8(name).map_err(|_| "name is not UTF-8")?);
    let mut candidates = vec![path.parent().unwrap_or(Path::new("")).join(name)];
    for dir in debug_dirs {
        candidates.push(build_id_path(dir, build_id));
    }
    for candidate in candidates {
        if let Ok(data) = read_file(&candidate) {
            return Ok(data);
        }
    }
    Err(format!("{} not found", name.display()))
}

/// `<dir>/.build-id/<first byte>/<rest>.debug`.
fn build_id_path(dir: &Path, build_id: &[u8]) -> PathBuf {
    let hex: String = build_id.iter().map(|b| format!("{b:02x}")).collect();
    let (head, tail) = hex.split_at(2.min(hex.len()));
    dir.join(".build-id").join(head).join(format!("{tail}.debug"))
}

/// The separate debug file of `path`, if one is installed; refuses a candidate whose build id is
/// not the file's.
fn find_debug_file(
    path: &Path,
    file: &object::File<'_>,
    build_id: Option<&[u8]>,
    debug_dirs: &[PathBuf],
    notes: &mut Vec<String>,
) -> Option<(PathBuf, Arc<[u8]>)> {
    let mut candidates = Vec::new();
    if let Some(id) = build_id.filter(|id| id.len() >= 2) {
        candidates.extend(debug_dirs.iter().map(|dir| build_id_path(dir, id)));
    }
    if let Ok(Some((name, _crc))) = file.gnu_debuglink() {
        if let Ok(name) = std::str::from_utf8(name) {
            let dir = path.parent().unwrap_or(Path::new("/"));
            candidates.push(dir.join(name));
            candidates.push(dir.join(".debug").join(name));
            for debug_dir in debug_dirs {
                let relative = dir.strip_prefix("/").unwrap_or(dir);
                candidates.push(debug_dir.join(relative).join(name));
            }
        }
    }
    for candidate in candidates {
        if candidate == path {
            continue;
        }
        let Ok(data) = read_file(&candidate) else { continue };
        let Ok(debug) = object::File::parse(&*data) else {
            continue;
        };
        let debug_id = debug.build_id().ok().flatten();
        if let (Some(want), Some(have)) = (build_id, debug_id) {
            if want != have {
                notes.push(format!(
                    "{}: build id differs from {}'s; not used",
                    candidate.display(),
                    path.display()
                ));
                continue;
            }
        }
        return Some((candidate, data));
    }
    None
}
