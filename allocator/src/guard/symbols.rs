//! Naming a code address from inside a crash, without allocating and without locks: the loaded
//! object holding it (`_dl_find_object`), its path, the address inside the ELF file (what
//! `addr2line` and `tally symbolize` take), and the dynamic symbol (`.dynsym`, the table the
//! loader itself uses) whose function covers it. Functions that are not exported (`static` ones,
//! an executable linked without `-rdynamic`) have no dynamic symbol: their frames print with the
//! object and address only, which `tally symbolize` resolves with the debug information.

use core::fmt::Write;

use tally_pal::elf::{self, DynamicTables, Sym, STT_FUNC, STT_GNU_IFUNC};
use tally_pal::{self as pal, LineBuf};

/// Reads the dynamic section of `obj`: the symbol and string tables and the number of symbols.
///
/// # Safety
/// `obj` must be a loaded object as the loader reports it (its dynamic section and the tables
/// it names are mapped).
unsafe fn dynamic(obj: &pal::process::LoadedObject) -> Option<DynamicTables> {
    if obj.dynamic == 0 {
        return None;
    }
    // The loader relocates the dynamic section's addresses in place where it is writable, not
    // where it is read-only (the vDSO): an address whose offset from the load bias lies below
    // the object's end is relocated already, any other one (an ELF virtual address, small,
    // below the bias) is not. Measured from the bias, not from `obj.start`: for the main
    // executable `_dl_find_object` may give a start past its first segment, where `.dynsym`
    // and `.gnu.hash` lie (the lib's test binary crashed adding the bias twice).
    let at = |v: u64| -> usize {
        let v = v as usize;
        if v.wrapping_sub(obj.bias) < obj.end.wrapping_sub(obj.bias) {
            v
        } else {
            v.wrapping_add(obj.bias)
        }
    };
    // SAFETY: per the contract.
    unsafe { elf::dynamic_tables(obj.dynamic, at) }
}

/// The dynamic function symbol of `dynamic` covering `vaddr` (an address inside the file): its
/// name and the offset into it.
///
/// # Safety
/// `dynamic` must describe a loaded object's mapped tables.
unsafe fn covering(dynamic: &DynamicTables, vaddr: usize) -> Option<(&'static [u8], usize)> {
    for k in 1..dynamic.count {
        // SAFETY: `k` is below the table's symbol count (per the contract).
        let sym = unsafe { &*(dynamic.symtab as *const Sym).add(k) };
        let kind = sym.info & 0xf;
        if (kind != STT_FUNC && kind != STT_GNU_IFUNC) || sym.shndx == 0 || sym.value == 0 {
            continue;
        }
        let start = sym.value as usize;
        if vaddr < start || vaddr >= start + (sym.size as usize).max(1) {
            continue;
        }
        if sym.name as usize >= dynamic.strsz {
            return None;
        }
        let name = (dynamic.strtab + sym.name as usize) as *const u8;
        // SAFETY: the string table holds NUL-terminated names within `strsz` bytes.
        let len = unsafe {
            let room = dynamic.strsz - sym.name as usize;
            (0..room.min(1024)).find(|&i| *name.add(i) == 0).unwrap_or(0)
        };
        // SAFETY: `len` bytes of the mapped string table.
        return Some((unsafe { core::slice::from_raw_parts(name, len) }, vaddr - start));
    }
    None
}

/// Writes `pc` as a report frame: `0x<pc 16 digits>[ in <symbol>+0x<off>][ (<object>+0x<vaddr>)]`.
pub fn write_frame(line: &mut LineBuf, pc: usize) {
    let _ = write!(line, "0x{pc:016x}");
    let Some(obj) = pal::process::loaded_object(pc) else {
        return;
    };
    let vaddr = pc.wrapping_sub(obj.bias);
    // SAFETY: the object is loaded (its code is on a stack being reported).
    if let Some(d) = unsafe { dynamic(&obj) } {
        // SAFETY: as above.
        if let Some((name, off)) = unsafe { covering(&d, vaddr) } {
            if let Ok(name) = core::str::from_utf8(name) {
                let _ = write!(line, " in {name}+0x{off:x}");
            }
        }
    }
    let mut exe = [0u8; 256];
    // SAFETY: the loader's names are NUL-terminated strings that live while the object is
    // loaded.
    let mut name = unsafe { core::ffi::CStr::from_ptr(obj.name) }.to_bytes();
    if name.is_empty() {
        let n = pal::process::executable_path(&mut exe);
        name = &exe[..n];
    }
    let name = core::str::from_utf8(name).unwrap_or("?");
    let _ = write!(line, " ({name}+0x{vaddr:x})");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_libc_function_is_named_with_its_object() {
        let pc = libc::getpid as *const () as usize + 3;
        let mut line = LineBuf::new();
        write_frame(&mut line, pc);
        let text = core::str::from_utf8(line.as_bytes()).unwrap();
        assert!(text.starts_with(&format!("0x{pc:016x} in ")), "{text}");
        assert!(text.contains("getpid+0x3 (") || text.contains("+0x3 ("), "{text}");
        assert!(text.contains("libc.so.6+0x"), "{text}");
    }

    #[test]
    fn an_address_in_no_object_is_bare() {
        let mut line = LineBuf::new();
        write_frame(&mut line, 16);
        assert_eq!(line.as_bytes(), b"0x0000000000000010");
    }

    #[test]
    fn the_executable_is_named_by_its_path() {
        // The test binary's own function: no dynamic symbol (not exported), but its path.
        let pc = an_address();
        let mut line = LineBuf::new();
        write_frame(&mut line, pc);
        let text = std::string::String::from_utf8(line.as_bytes().to_vec()).unwrap();
        let exe = std::env::current_exe().unwrap();
        assert!(text.contains(&format!("({}+0x", exe.display())), "{text}");
    }

    #[inline(never)]
    fn an_address() -> usize {
        an_address as *const () as usize
    }
}
