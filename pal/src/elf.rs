//! Reading a loaded ELF object's dynamic symbols in place, without allocating: the tables its
//! dynamic section names ([`dynamic_tables`]), the number of symbols its hash table counts, and
//! the vDSO's functions by name ([`vdso_function`]). The images are the loader's or the
//! kernel's, so they are trusted to be well formed; what is bounded is the walk of a dynamic
//! section (4096 entries) and the symbol count (2^22), against a damaged one.

/// `PT_LOAD`, `PT_DYNAMIC`: program header types.
const PT_LOAD: u32 = 1;
const PT_DYNAMIC: u32 = 2;
/// Dynamic section tags.
const DT_NULL: i64 = 0;
const DT_HASH: i64 = 4;
const DT_STRTAB: i64 = 5;
const DT_SYMTAB: i64 = 6;
const DT_STRSZ: i64 = 10;
const DT_GNU_HASH: i64 = 0x6fff_fef5;
/// A function symbol's type (the low 4 bits of [`Sym::info`]).
pub const STT_FUNC: u8 = 2;
/// An indirect function's (resolved by the loader calling it).
pub const STT_GNU_IFUNC: u8 = 10;

/// An ELF symbol (`Elf64_Sym`).
#[repr(C)]
pub struct Sym {
    /// Offset of its name in the string table.
    pub name: u32,
    /// Binding (high 4 bits) and type (low 4 bits).
    pub info: u8,
    /// Visibility.
    pub other: u8,
    /// Section index; 0 for an undefined symbol.
    pub shndx: u16,
    /// Address, in the object's own addresses.
    pub value: u64,
    /// Size in bytes.
    pub size: u64,
}

/// `Elf64_Ehdr`.
#[repr(C)]
struct Ehdr {
    ident: [u8; 16],
    kind: u16,
    machine: u16,
    version: u32,
    entry: u64,
    phoff: u64,
    shoff: u64,
    flags: u32,
    ehsize: u16,
    phentsize: u16,
    phnum: u16,
    shentsize: u16,
    shnum: u16,
    shstrndx: u16,
}

/// `Elf64_Phdr`.
#[repr(C)]
struct Phdr {
    kind: u32,
    flags: u32,
    offset: u64,
    vaddr: u64,
    paddr: u64,
    filesz: u64,
    memsz: u64,
    align: u64,
}

/// What an object's dynamic section says about its symbols, as addresses in memory.
pub struct DynamicTables {
    /// The symbol table (`Sym`s).
    pub symtab: usize,
    /// The string table of their names.
    pub strtab: usize,
    /// The string table's size in bytes (0 if the section does not say).
    pub strsz: usize,
    /// Symbols in `symtab` (from `DT_HASH`, or counted through `DT_GNU_HASH`).
    pub count: usize,
    /// The hash tables' addresses (0: absent).
    hash: usize,
    gnu_hash: usize,
}

/// Reads the dynamic section at `dynamic`, turning each table's address as the section writes
/// it into one in memory with `at`. None without a symbol or string table or a hash table.
///
/// # Safety
/// `dynamic` must be a mapped dynamic section ending with `DT_NULL` (or longer than 4096
/// entries), and the tables it names, translated by `at`, must be mapped.
#[inline(always)]
pub unsafe fn dynamic_tables(dynamic: usize, at: impl Fn(u64) -> usize) -> Option<DynamicTables> {
    let mut t = DynamicTables {
        symtab: 0,
        strtab: 0,
        strsz: 0,
        count: 0,
        hash: 0,
        gnu_hash: 0,
    };
    let mut d = dynamic as *const [u64; 2];
    // SAFETY: per the contract the section is mapped and ends with DT_NULL.
    unsafe {
        for _ in 0..4096 {
            let [tag, val] = *d;
            match tag as i64 {
                DT_NULL => break,
                DT_SYMTAB => t.symtab = at(val),
                DT_STRTAB => t.strtab = at(val),
                DT_STRSZ => t.strsz = val as usize,
                DT_HASH => t.hash = at(val),
                DT_GNU_HASH => t.gnu_hash = at(val),
                _ => {}
            }
            d = d.add(1);
        }
    }
    if t.symtab == 0 || t.strtab == 0 {
        return None;
    }
    // SAFETY: the hash tables the section names are mapped (per the contract).
    t.count = unsafe {
        if t.hash != 0 {
            hash_symbol_count(t.hash)
        } else if t.gnu_hash != 0 {
            gnu_symbol_count(t.gnu_hash)
        } else {
            return None;
        }
    }
    .min(1 << 22);
    Some(t)
}

/// The number of symbols of a `DT_HASH` table: its second word (nbucket, nchain, ...).
///
/// # Safety
/// `table` must be a mapped ELF hash table.
#[inline(always)]
unsafe fn hash_symbol_count(table: usize) -> usize {
    // SAFETY: per the contract.
    unsafe { *(table as *const u32).add(1) as usize }
}

/// The number of symbols of a `DT_GNU_HASH` table: one past the highest index a chain reaches.
///
/// # Safety
/// `table` must be a mapped GNU hash table.
#[inline(always)]
unsafe fn gnu_symbol_count(table: usize) -> usize {
    // SAFETY: per the contract: header (4 words), bloom filter, buckets, then chains, each chain
    // ending with a word whose lowest bit is set.
    unsafe {
        let words = table as *const u32;
        let (nbuckets, symoffset, bloom_size) =
            (*words as usize, *words.add(1) as usize, *words.add(2) as usize);
        let buckets = (table + 16 + bloom_size * 8) as *const u32;
        let chains = buckets.add(nbuckets);
        let mut last = 0usize;
        for b in 0..nbuckets {
            last = last.max(*buckets.add(b) as usize);
        }
        if last < symoffset {
            return symoffset;
        }
        while *chains.add(last - symoffset) & 1 == 0 {
            last += 1;
        }
        last + 1
    }
}

/// The address of the vDSO's function `name` (the small shared object the kernel maps into
/// every process, whose ELF header `getauxval(AT_SYSINFO_EHDR)` gives), if the process has a
/// vDSO that defines it. Its dynamic section is found through its program headers, as a
/// dynamic loader would, and its addresses are the image's own (the vDSO is not relocated).
/// Among the code every program runs (`allocator/hot-text.ld`): `time.rs` looks up the clock
/// with it.
#[inline(never)]
#[cfg_attr(target_os = "linux", link_section = ".text.hot.tally")]
pub fn vdso_function(name: &[u8]) -> Option<usize> {
    if name.is_empty() {
        return None;
    }
    // SAFETY: getauxval has no preconditions.
    let base = unsafe { libc::getauxval(libc::AT_SYSINFO_EHDR) } as usize;
    if base == 0 {
        return None;
    }
    // SAFETY: a non-zero AT_SYSINFO_EHDR is the address of the vDSO's ELF image, mapped readable
    // for the life of the process (the kernel's contract), its tables inside it.
    unsafe {
        let (load, t) = vdso_tables(base)?;
        for k in 1..t.count {
            // SAFETY: `k` is below the table's symbol count.
            let sym = &*(t.symtab as *const Sym).add(k);
            if sym.info & 0xf != STT_FUNC || sym.shndx == 0 || sym.value == 0 {
                continue;
            }
            if c_str_is(t.strtab + sym.name as usize, name) {
                return Some(load.wrapping_add(sym.value as usize));
            }
        }
    }
    None
}

/// The vDSO image's address 0 (its first `PT_LOAD`'s offset minus its address) and its tables.
///
/// # Safety
/// `base` must be the address of a mapped ELF image whose tables lie inside it.
#[inline(always)]
unsafe fn vdso_tables(base: usize) -> Option<(usize, DynamicTables)> {
    // SAFETY: per the contract the image starts with an ELF header.
    let eh = unsafe { &*(base as *const Ehdr) };
    if eh.ident[..4] != *b"\x7fELF"
        || eh.ident[4] != 2 // ELFCLASS64
        || eh.ident[5] != 1 // ELFDATA2LSB
        || usize::from(eh.phentsize) != core::mem::size_of::<Phdr>()
    {
        return None;
    }
    let mut load: Option<usize> = None;
    let mut dynamic: Option<usize> = None;
    for i in 0..usize::from(eh.phnum) {
        let at = base + eh.phoff as usize + i * core::mem::size_of::<Phdr>();
        // SAFETY: the program headers lie in the image (the contract), `phnum` of them.
        let ph = unsafe { &*(at as *const Phdr) };
        match ph.kind {
            PT_LOAD if load.is_none() => {
                load = Some(
                    base.wrapping_add(ph.offset as usize)
                        .wrapping_sub(ph.vaddr as usize),
                )
            }
            PT_DYNAMIC => dynamic = Some(base + ph.offset as usize),
            _ => {}
        }
    }
    let (load, dynamic) = (load?, dynamic?);
    // SAFETY: the dynamic section and the tables it names lie in the image.
    let tables = unsafe { dynamic_tables(dynamic, |v| load.wrapping_add(v as usize)) }?;
    Some((load, tables))
}

/// Whether the NUL-terminated string at `at` is `name`.
///
/// # Safety
/// `at` must point at a NUL-terminated string.
#[inline(always)]
unsafe fn c_str_is(at: usize, name: &[u8]) -> bool {
    let s = at as *const u8;
    for (i, &b) in name.iter().enumerate() {
        // SAFETY: the string has not ended before `i` (its bytes so far matched `name`, which
        // holds no NUL), so `s + i` is in it.
        if unsafe { *s.add(i) } != b {
            return false;
        }
    }
    // SAFETY: as above, `s + name.len()` is in the string or is its NUL.
    unsafe { *s.add(name.len()) == 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    fn the_vdso_has_its_clock_and_nothing_else_by_that_name() {
        let name: &[u8] = if cfg!(target_arch = "x86_64") {
            b"__vdso_clock_gettime"
        } else {
            b"__kernel_clock_gettime"
        };
        assert!(vdso_function(name).is_some());
        assert_eq!(vdso_function(&name[..name.len() - 1]), None);
        assert_eq!(vdso_function(b"__vdso_no_such_function"), None);
        assert_eq!(vdso_function(b""), None);
    }

    #[test]
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    fn both_hash_tables_count_the_same_symbols() {
        // SAFETY: getauxval has no preconditions.
        let base = unsafe { libc::getauxval(libc::AT_SYSINFO_EHDR) } as usize;
        assert_ne!(base, 0, "no vDSO");
        // SAFETY: the vDSO's image, as in `vdso_function`.
        let (_, t) = unsafe { vdso_tables(base) }.expect("the vDSO's tables");
        // Linux links its vDSO with both tables; a count of 0 would mean neither was read.
        assert!(t.hash != 0 && t.gnu_hash != 0, "the vDSO has both hash tables");
        // SAFETY: both tables are the vDSO's.
        let (hash, gnu) = unsafe { (hash_symbol_count(t.hash), gnu_symbol_count(t.gnu_hash)) };
        assert!(hash > 1);
        assert_eq!(hash, gnu);
        assert_eq!(t.count, hash);
    }
}
