//! Function names for code addresses, from the symbol tables of the loaded objects' files: what
//! the in-process pprof profile names its frames with (issue 16), so that a tool that does not
//! read the objects itself (Pyroscope) shows names.
//!
//! Each object file is mapped read-only for the lookups of one profile and unmapped after it;
//! nothing is cached between profiles. The table read is `.symtab` (every function, `static`
//! ones too) when the file has one, else the separate debug file Debian's `-dbgsym` packages
//! install under `/usr/lib/debug/.build-id/`, else `.dynsym` (the exported functions, all a
//! stripped object keeps). Only defined function symbols count (`STT_FUNC`); the one holding an
//! address is the last to start at or below it, if its size covers it (a size of 0, as
//! hand-written assembly has, covers up to the next symbol, at most 4 KiB).
//!
//! This runs outside the recording path (from `tally::prof::pprof()` and the `prof_http`
//! thread), so it allocates, through Tally itself, unsampled.

use std::string::String;
use std::vec::Vec;

use tally_format::demangle::demangle;
use tally_pal::elf::STT_FUNC;
use tally_pal::file::MappedFile;

const SHT_SYMTAB: u32 = 2;
const SHT_DYNSYM: u32 = 11;
const SHN_UNDEF: u16 = 0;
/// The most a symbol of size 0 (hand-written assembly, `_init`, `_fini`) is taken to cover.
const UNSIZED_REACH: u64 = 4096;
/// Size of an `Elf64_Shdr` and of an `Elf64_Sym`.
const SHDR_SIZE: usize = 64;
const SYM_SIZE: usize = 24;

/// One function symbol: its address range in the file's address space, where its name starts
/// in the string table, and its binding's rank (0 global, 1 weak, 2 local: where aliases start
/// at one address, the global name is the one a person knows, `malloc` before `__libc_malloc`).
#[derive(Clone, Copy)]
struct Func {
    start: u64,
    end: u64,
    name: usize,
    rank: u8,
}

/// The function symbols of one object file, sorted by address, with the file they are read
/// from kept mapped for their names.
pub struct SymbolTable {
    file: MappedFile,
    /// Where the string table is in the file.
    strings: core::ops::Range<usize>,
    funcs: Vec<Func>,
}

impl SymbolTable {
    /// The symbol table of the object at `path` whose GNU build id is `build_id` (empty:
    /// unknown): see the module's documentation for which table. `None` if no readable file
    /// has function symbols.
    pub fn load(path: &str, build_id: &[u8]) -> Option<SymbolTable> {
        let object = map(path);
        if let Some(table) = object.as_ref().and_then(|f| read_table(f.bytes(), SHT_SYMTAB)) {
            return Some(SymbolTable::new(object?, table));
        }
        if build_id.len() >= 2 {
            let mut debug = String::from("/usr/lib/debug/.build-id/");
            for (i, b) in build_id.iter().enumerate() {
                if i == 1 {
                    debug.push('/');
                }
                debug.push_str(&std::format!("{b:02x}"));
            }
            debug.push_str(".debug");
            if let Some(file) = map(&debug) {
                if let Some(table) = read_table(file.bytes(), SHT_SYMTAB) {
                    return Some(SymbolTable::new(file, table));
                }
            }
        }
        let object = object?;
        let table = read_table(object.bytes(), SHT_DYNSYM)?;
        Some(SymbolTable::new(object, table))
    }

    fn new(file: MappedFile, (strings, mut funcs): (core::ops::Range<usize>, Vec<Func>)) -> SymbolTable {
        funcs.sort_unstable_by_key(|f| (f.start, f.rank, core::cmp::Reverse(f.end)));
        funcs.dedup_by_key(|f| f.start);
        // Sizes of 0 reach the next symbol, but no further than [`UNSIZED_REACH`].
        for i in 0..funcs.len() {
            if funcs[i].end == funcs[i].start {
                let limit = funcs[i].start.saturating_add(UNSIZED_REACH);
                funcs[i].end = funcs.get(i + 1).map_or(limit, |next| next.start.min(limit));
            }
        }
        SymbolTable { file, strings, funcs }
    }

    /// The raw (mangled) name of the function holding `address` (an address in the file's own
    /// address space: the process address minus the object's load bias).
    pub fn lookup(&self, address: u64) -> Option<&str> {
        let i = self
            .funcs
            .partition_point(|f| f.start <= address)
            .checked_sub(1)?;
        let f = self.funcs[i];
        if address >= f.end {
            return None;
        }
        let strings = self.file.bytes().get(self.strings.clone())?;
        let name = strings.get(f.name..)?;
        let name = &name[..name.iter().position(|&b| b == 0)?];
        core::str::from_utf8(name).ok().filter(|n| !n.is_empty())
    }
}

/// The readable form of a raw symbol name (Rust without its hash, C++ without parameters).
pub fn readable(raw: &str) -> String {
    demangle(raw)
}

fn map(path: &str) -> Option<MappedFile> {
    let mut c = Vec::with_capacity(path.len() + 1);
    c.extend_from_slice(path.as_bytes());
    c.push(0);
    MappedFile::open(&c)
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// The function symbols of the first section of type `kind` in the ELF file `elf` (64-bit,
/// little-endian: what this allocator runs on), with the range of their string table. `None`
/// when the file is not such an ELF file, has no such section or it holds no function.
fn read_table(elf: &[u8], kind: u32) -> Option<(core::ops::Range<usize>, Vec<Func>)> {
    if elf.get(..6)? != b"\x7fELF\x02\x01" {
        return None;
    }
    let shoff = u64_at(elf, 0x28)? as usize;
    let shentsize = u16_at(elf, 0x3a)? as usize;
    let shnum = u16_at(elf, 0x3c)? as usize;
    if shentsize < SHDR_SIZE {
        return None;
    }
    let section = |i: usize| -> Option<(u32, usize, usize, u32)> {
        let at = shoff.checked_add(i.checked_mul(shentsize)?)?;
        let kind = u32_at(elf, at + 4)?;
        let offset = u64_at(elf, at + 24)? as usize;
        let size = u64_at(elf, at + 32)? as usize;
        let link = u32_at(elf, at + 40)?;
        Some((kind, offset, size, link))
    };
    let (_, offset, size, link) = (0..shnum).filter_map(section).find(|s| s.0 == kind)?;
    let (_, str_offset, str_size, _) = section(link as usize)?;
    let strings = str_offset..str_offset.checked_add(str_size)?;
    elf.get(strings.clone())?;
    let symbols = elf.get(offset..offset.checked_add(size)?)?;
    let funcs: Vec<Func> = symbols
        .chunks_exact(SYM_SIZE)
        .filter_map(|sym| {
            let info = sym[4];
            let shndx = u16_at(sym, 6)?;
            let start = u64_at(sym, 8)?;
            let size = u64_at(sym, 16)?;
            (info & 0xf == STT_FUNC && shndx != SHN_UNDEF && start != 0).then_some(Func {
                start,
                end: start.saturating_add(size),
                name: u32_at(sym, 0)? as usize,
                rank: match info >> 4 {
                    1 => 0,
                    2 => 1,
                    _ => 2,
                },
            })
        })
        .collect();
    (!funcs.is_empty()).then_some((strings, funcs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[inline(never)]
    fn a_function_with_a_name(x: u64) -> u64 {
        std::hint::black_box(x).wrapping_mul(0x9e37_79b9_7f4a_7c15)
    }

    #[test]
    fn names_a_function_of_this_test_binary() {
        let exe = std::env::current_exe().unwrap();
        let table = SymbolTable::load(exe.to_str().unwrap(), &[]).expect("the test binary has symbols");
        // The test binary is a PIE: its load bias is where it is mapped minus its first
        // segment's address, which `dladdr` knows.
        let address = a_function_with_a_name as *const () as usize;
        // SAFETY: an all-zero Dl_info is valid for dladdr to fill.
        let mut info: libc::Dl_info = unsafe { core::mem::zeroed() };
        // SAFETY: `address` is code of this binary; `info` a valid out-pointer.
        assert_ne!(unsafe { libc::dladdr(address as *const _, &mut info) }, 0);
        let bias = info.dli_fbase as u64;
        let raw = table
            .lookup(address as u64 - bias + 1)
            .expect("a symbol holds the address");
        assert!(readable(raw).ends_with("a_function_with_a_name"), "{raw}");
        assert_eq!(table.lookup(u64::MAX - 1), None);
    }

    #[test]
    fn refuses_what_is_not_elf() {
        assert!(read_table(b"", SHT_SYMTAB).is_none());
        assert!(read_table(b"\x7fELF\x02\x01\0\0", SHT_SYMTAB).is_none());
        let mut header = std::vec![0u8; 64];
        header[..6].copy_from_slice(b"\x7fELF\x02\x01");
        header[0x28..0x30].copy_from_slice(&u64::MAX.to_le_bytes());
        header[0x3a] = 64;
        header[0x3c] = 3;
        assert!(read_table(&header, SHT_SYMTAB).is_none());
        assert!(SymbolTable::load("/nonexistent/object.so", &[1, 2, 3]).is_none());
    }
}
