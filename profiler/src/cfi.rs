//! [`Cfi`]: a DWARF call-frame-information walker for x86-64 that remembers, per return address,
//! the one rule it needs, so that a sample's stack costs a few loads per frame instead of
//! libgcc's full frame-state interpretation (about 95 ns a frame, 95% of a sample's cost).
//!
//! For each frame it needs three registers only: `rip`, `rsp` and `rbp`. The rule for an address
//! says where the canonical frame address (CFA) is (`rsp` or `rbp` plus an offset), that the
//! return address is at `CFA - 8` (always, on x86-64), and whether the caller's `rbp` was saved
//! at `CFA + k`. Rules are computed on a miss the way libgcc does (the object from
//! `_dl_find_object`, its `.eh_frame_hdr` binary-search table, the FDE and CIE, the CFA program
//! run up to the address) and kept in a fixed table of [`SLOTS`] entries, each tagged with the
//! start of the object it came from; `_dl_find_object` (lock-free, no allocation) is asked again
//! on every frame, so an entry of an unloaded object is never used for another one.
//!
//! What it does not handle, it leaves to [`Libgcc`] for the whole capture: CFA or register rules
//! given as DWARF expressions (PLT stubs, signal frames), 64-bit DWARF, pointer encodings other
//! than the usual ones. An address without an FDE (JIT code, the end of the stack) ends the walk
//! as it ends libgcc's. Nothing here allocates, takes a lock, or panics: the table is written
//! under a try-lock (a writer that finds it held just does not cache) and read through a
//! per-entry sequence number (held across `fork` by [`lock_for_fork`], so a child never inherits
//! it held).
//!
//! Reads of the stack are sanity-checked like the frame-pointer walker's (each CFA above the last
//! `rsp` by at most [`MAX_FRAME_BYTES`], 8-aligned); with correct unwind tables they stay inside
//! the frames being walked, as libgcc's do.

use core::ffi::{c_int, c_void};
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};

use crate::unwind::{Libgcc, Unwinder, MAX_FRAMES, MAX_FRAME_BYTES};

/// Entries in the rule table (a power of two).
pub const SLOTS: usize = 4096;

#[repr(C)]
struct DlFindObject {
    flags: u64,
    map_start: *mut c_void,
    map_end: *mut c_void,
    link_map: *mut c_void,
    eh_frame: *mut c_void,
    reserved: [u64; 7],
}

extern "C" {
    /// glibc 2.35+: the object containing `pc`, without the loader lock and without allocating.
    fn _dl_find_object(pc: *mut c_void, result: *mut DlFindObject) -> c_int;
}

/// How to step out of a frame (see the module docs). Packed into a `u64` for the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Rule {
    cfa_from_rbp: bool,
    cfa_off: i32,
    /// Where the caller's `rbp` is, relative to the CFA; 0: `rbp` is unchanged.
    rbp_at: i16,
    /// The return address is undefined: the outermost frame.
    end: bool,
}

const VALID: u64 = 1 << 63;
const FROM_RBP: u64 = 1 << 48;
const END: u64 = 1 << 49;

impl Rule {
    fn pack(self) -> u64 {
        VALID
            | (self.cfa_off as u32 as u64)
            | ((self.rbp_at as u16 as u64) << 32)
            | if self.cfa_from_rbp { FROM_RBP } else { 0 }
            | if self.end { END } else { 0 }
    }

    fn unpack(v: u64) -> Rule {
        Rule {
            cfa_from_rbp: v & FROM_RBP != 0,
            cfa_off: v as u32 as i32,
            rbp_at: (v >> 32) as u16 as i16,
            end: v & END != 0,
        }
    }
}

/// One cached rule. Invariant: while `seq` is even, `pc`, `object` and `rule` belong together.
struct Slot {
    seq: AtomicU32,
    pc: AtomicUsize,
    object: AtomicUsize,
    rule: AtomicU64,
}

#[allow(clippy::declare_interior_mutable_const)]
const EMPTY_SLOT: Slot = Slot {
    seq: AtomicU32::new(0),
    pc: AtomicUsize::new(0),
    object: AtomicUsize::new(0),
    rule: AtomicU64::new(0),
};

static TABLE: [Slot; SLOTS] = [EMPTY_SLOT; SLOTS];
/// Held by the one thread writing the table.
static WRITING: AtomicBool = AtomicBool::new(false);
/// Rules computed (a statistic, and what the tests look at).
pub static MISSES: AtomicU64 = AtomicU64::new(0);
/// Captures handed to libgcc because of a frame this walker does not interpret.
pub static FALLBACKS: AtomicU64 = AtomicU64::new(0);

fn slot_of(pc: usize) -> &'static Slot {
    let h = (pc as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 52;
    &TABLE[h as usize & (SLOTS - 1)]
}

fn cached(pc: usize, object: usize) -> Option<Rule> {
    let slot = slot_of(pc);
    let s1 = slot.seq.load(Ordering::Acquire);
    if s1 & 1 != 0 {
        return None;
    }
    let (p, o, r) = (
        slot.pc.load(Ordering::Relaxed),
        slot.object.load(Ordering::Relaxed),
        slot.rule.load(Ordering::Relaxed),
    );
    core::sync::atomic::fence(Ordering::Acquire);
    if slot.seq.load(Ordering::Relaxed) != s1 || p != pc || o != object || r & VALID == 0 {
        return None;
    }
    Some(Rule::unpack(r))
}

/// Fork `prepare` handler: waits out a writer (a few stores, nothing that can block) and keeps
/// the table closed, so that a child does not inherit it held by a thread it does not have.
pub fn lock_for_fork() {
    while WRITING.swap(true, Ordering::Acquire) {
        core::hint::spin_loop();
    }
}

/// Fork parent and child handler: opens the table again.
pub fn unlock_after_fork() {
    WRITING.store(false, Ordering::Release);
}

fn remember(pc: usize, object: usize, rule: Rule) {
    if WRITING.swap(true, Ordering::Acquire) {
        return;
    }
    let slot = slot_of(pc);
    let s = slot.seq.load(Ordering::Relaxed);
    slot.seq.store(s.wrapping_add(1), Ordering::Relaxed);
    core::sync::atomic::fence(Ordering::Release);
    slot.pc.store(pc, Ordering::Relaxed);
    slot.object.store(object, Ordering::Relaxed);
    slot.rule.store(rule.pack(), Ordering::Relaxed);
    slot.seq.store(s.wrapping_add(2), Ordering::Release);
    WRITING.store(false, Ordering::Release);
}

/// Why no rule.
enum Miss {
    /// No object or no FDE covers the address: the walk ends here.
    NoFrame,
    /// Unwind information this walker does not interpret: let libgcc do the capture.
    Unsupported,
}

/// A cursor over unwind tables in a loaded object. Every read is of memory the dynamic loader
/// mapped readable for the object (`.eh_frame_hdr`, `.eh_frame`), at offsets the tables give.
struct Cursor {
    p: usize,
}

impl Cursor {
    fn u8(&mut self) -> u8 {
        // SAFETY: see the type's docs.
        let v = unsafe { *(self.p as *const u8) };
        self.p += 1;
        v
    }
    fn u16(&mut self) -> u16 {
        // SAFETY: see the type's docs.
        let v = unsafe { (self.p as *const u16).read_unaligned() };
        self.p += 2;
        v
    }
    fn u32(&mut self) -> u32 {
        // SAFETY: see the type's docs.
        let v = unsafe { (self.p as *const u32).read_unaligned() };
        self.p += 4;
        v
    }
    fn u64(&mut self) -> u64 {
        // SAFETY: see the type's docs.
        let v = unsafe { (self.p as *const u64).read_unaligned() };
        self.p += 8;
        v
    }
    fn uleb(&mut self) -> u64 {
        let (mut v, mut shift) = (0u64, 0u32);
        loop {
            let b = self.u8();
            if shift < 64 {
                v |= ((b & 0x7f) as u64) << shift;
            }
            shift += 7;
            if b & 0x80 == 0 {
                return v;
            }
        }
    }
    fn sleb(&mut self) -> i64 {
        let (mut v, mut shift) = (0i64, 0u32);
        loop {
            let b = self.u8();
            if shift < 64 {
                v |= ((b & 0x7f) as i64) << shift;
            }
            shift += 7;
            if b & 0x80 == 0 {
                if shift < 64 && b & 0x40 != 0 {
                    v |= -1i64 << shift;
                }
                return v;
            }
        }
    }

    /// A pointer in DWARF EH encoding `enc`; `data` is the base of `DW_EH_PE_datarel`. `None` for
    /// encodings not handled (indirect, text- or function-relative, aligned).
    fn encoded(&mut self, enc: u8, data: usize) -> Option<usize> {
        let field = self.p;
        let raw = match enc & 0x0f {
            0x00 => self.u64() as usize,
            0x01 => self.uleb() as usize,
            0x02 => self.u16() as usize,
            0x03 => self.u32() as usize,
            0x04 => self.u64() as usize,
            0x09 => self.sleb() as usize,
            0x0a => self.u16() as i16 as isize as usize,
            0x0b => self.u32() as i32 as isize as usize,
            0x0c => self.u64() as usize,
            _ => return None,
        };
        match enc & 0x70 {
            0x00 => Some(raw),
            0x10 => Some(field.wrapping_add(raw)),
            0x30 => Some(data.wrapping_add(raw)),
            _ => None,
        }
    }
}

const DW_EH_PE_OMIT: u8 = 0xff;
const REG_RBP: u64 = 6;
const REG_RSP: u64 = 7;
const REG_RA: u64 = 16;

#[derive(Clone, Copy, PartialEq, Eq)]
enum RegRule {
    Unchanged,
    Undefined,
    AtCfa(i64),
    Other,
}

#[derive(Clone, Copy)]
struct Row {
    cfa_reg: u64,
    cfa_off: i64,
    rbp: RegRule,
    ra: RegRule,
}

/// The FDE covering `pc` in the object whose `.eh_frame_hdr` is at `hdr`: (FDE address,
/// pc_begin) via the header's sorted table.
fn find_fde(hdr: usize, pc: usize) -> Result<usize, Miss> {
    let mut c = Cursor { p: hdr };
    if c.u8() != 1 {
        return Err(Miss::Unsupported);
    }
    let (ptr_enc, count_enc, table_enc) = (c.u8(), c.u8(), c.u8());
    c.encoded(ptr_enc, hdr).ok_or(Miss::Unsupported)?;
    if count_enc == DW_EH_PE_OMIT || table_enc != 0x3b {
        // The table libgcc also needs to search without `dl_iterate_phdr`: datarel sdata4.
        return Err(Miss::Unsupported);
    }
    let count = c.encoded(count_enc, hdr).ok_or(Miss::Unsupported)?;
    let table = c.p;
    let entry = |i: usize| -> (usize, usize) {
        // SAFETY: `i < count`, inside the table the header describes.
        unsafe {
            let e = (table + i * 8) as *const i32;
            (
                hdr.wrapping_add(e.read_unaligned() as isize as usize),
                hdr.wrapping_add(e.add(1).read_unaligned() as isize as usize),
            )
        }
    };
    let (mut lo, mut hi) = (0usize, count);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if entry(mid).0 <= pc {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    if lo == 0 {
        return Err(Miss::NoFrame);
    }
    Ok(entry(lo - 1).1)
}

/// Computes the rule for `pc` (already minus one for a return address).
fn compute(hdr: usize, pc: usize) -> Result<Rule, Miss> {
    let fde = find_fde(hdr, pc)?;
    let mut c = Cursor { p: fde };
    let len = c.u32() as usize;
    if len == 0xffff_ffff {
        return Err(Miss::Unsupported);
    }
    if len == 0 {
        return Err(Miss::NoFrame);
    }
    let fde_end = c.p + len;
    let cie_field = c.p;
    let cie_off = c.u32() as usize;
    if cie_off == 0 {
        return Err(Miss::Unsupported);
    }
    let cie = cie_field - cie_off;

    // The CIE.
    let mut k = Cursor { p: cie };
    let cie_len = k.u32() as usize;
    if cie_len == 0xffff_ffff || cie_len == 0 {
        return Err(Miss::Unsupported);
    }
    let cie_end = k.p + cie_len;
    if k.u32() != 0 {
        return Err(Miss::Unsupported);
    }
    let version = k.u8();
    if version != 1 && version != 3 {
        return Err(Miss::Unsupported);
    }
    let aug = k.p;
    let mut aug_len = 0;
    while k.u8() != 0 {
        aug_len += 1;
        if aug_len > 8 {
            return Err(Miss::Unsupported);
        }
    }
    // SAFETY: the augmentation string just scanned, `aug_len` bytes before its NUL.
    let aug = unsafe { core::slice::from_raw_parts(aug as *const u8, aug_len) };
    let code_align = k.uleb() as i64;
    let data_align = k.sleb();
    let ra_reg = if version == 1 { k.u8() as u64 } else { k.uleb() };
    if ra_reg != REG_RA {
        return Err(Miss::Unsupported);
    }
    let mut fde_enc = 0u8;
    let mut has_z = false;
    if let Some((&b'z', rest)) = aug.split_first() {
        has_z = true;
        let data_len = k.uleb() as usize;
        let data_end = k.p + data_len;
        for &ch in rest {
            match ch {
                b'R' => fde_enc = k.u8(),
                b'L' => {
                    k.u8();
                }
                b'P' => {
                    let enc = k.u8();
                    k.encoded(enc, 0).ok_or(Miss::Unsupported)?;
                }
                // A signal frame's rules are expressions: libgcc's business.
                _ => return Err(Miss::Unsupported),
            }
        }
        k.p = data_end;
    } else if !aug.is_empty() {
        return Err(Miss::Unsupported);
    }
    let cie_program = (k.p, cie_end);

    // The FDE's range.
    let pc_begin = c.encoded(fde_enc, 0).ok_or(Miss::Unsupported)?;
    let pc_range = c.encoded(fde_enc & 0x0f, 0).ok_or(Miss::Unsupported)?;
    if pc < pc_begin || pc >= pc_begin.wrapping_add(pc_range) {
        return Err(Miss::NoFrame);
    }
    if has_z {
        let n = c.uleb() as usize;
        c.p += n;
    }
    let fde_program = (c.p, fde_end);

    let row = Row {
        cfa_reg: REG_RSP,
        cfa_off: 8,
        rbp: RegRule::Unchanged,
        ra: RegRule::Unchanged,
    };
    let initial = run(cie_program, row, row, usize::MAX, 0, code_align, data_align)?;
    let row = run(
        fde_program,
        initial,
        initial,
        pc,
        pc_begin,
        code_align,
        data_align,
    )?;
    if row.ra == RegRule::Undefined {
        return Ok(Rule {
            cfa_from_rbp: false,
            cfa_off: 0,
            rbp_at: 0,
            end: true,
        });
    }
    if row.ra != RegRule::AtCfa(-8) || (row.cfa_reg != REG_RSP && row.cfa_reg != REG_RBP) {
        return Err(Miss::Unsupported);
    }
    let cfa_off = i32::try_from(row.cfa_off).map_err(|_| Miss::Unsupported)?;
    let rbp_at = match row.rbp {
        RegRule::Unchanged | RegRule::Undefined => 0,
        RegRule::AtCfa(off) if off < 0 && off >= i16::MIN as i64 => off as i16,
        _ => return Err(Miss::Unsupported),
    };
    Ok(Rule {
        cfa_from_rbp: row.cfa_reg == REG_RBP,
        cfa_off,
        rbp_at,
        end: false,
    })
}

/// Runs the CFA program in `[start, end)` from `row` (with `initial` for `DW_CFA_restore`) up
/// to the row for `pc`, the program's location starting at `loc`.
fn run(
    (start, end): (usize, usize),
    mut row: Row,
    initial: Row,
    pc: usize,
    mut loc: usize,
    code_align: i64,
    data_align: i64,
) -> Result<Row, Miss> {
    const STACK: usize = 8;
    let mut saved = [row; STACK];
    let mut depth = 0;
    let mut c = Cursor { p: start };
    let set = |row: &mut Row, reg: u64, rule: RegRule| {
        if reg == REG_RBP {
            row.rbp = rule;
        } else if reg == REG_RA {
            row.ra = rule;
        }
    };
    while c.p < end {
        let op = c.u8();
        let advance = match op >> 6 {
            1 => Some((op & 0x3f) as u64),
            2 => {
                let off = c.uleb() as i64 * data_align;
                set(&mut row, (op & 0x3f) as u64, RegRule::AtCfa(off));
                None
            }
            3 => {
                let reg = (op & 0x3f) as u64;
                let back = if reg == REG_RBP { initial.rbp } else { initial.ra };
                set(&mut row, reg, back);
                None
            }
            _ => match op {
                0x00 => None,
                0x02 => Some(c.u8() as u64),
                0x03 => Some(c.u16() as u64),
                0x04 => Some(c.u32() as u64),
                0x05 => {
                    let reg = c.uleb();
                    let off = c.uleb() as i64 * data_align;
                    set(&mut row, reg, RegRule::AtCfa(off));
                    None
                }
                0x06 => {
                    let reg = c.uleb();
                    let back = if reg == REG_RBP { initial.rbp } else { initial.ra };
                    set(&mut row, reg, back);
                    None
                }
                0x07 => {
                    set(&mut row, c.uleb(), RegRule::Undefined);
                    None
                }
                0x08 => {
                    set(&mut row, c.uleb(), RegRule::Unchanged);
                    None
                }
                0x09 => {
                    let reg = c.uleb();
                    c.uleb();
                    set(&mut row, reg, RegRule::Other);
                    None
                }
                0x0a => {
                    if depth == STACK {
                        return Err(Miss::Unsupported);
                    }
                    saved[depth] = row;
                    depth += 1;
                    None
                }
                0x0b => {
                    if depth == 0 {
                        return Err(Miss::Unsupported);
                    }
                    depth -= 1;
                    // The CFA rule is part of the saved state too (DWARF 5 clarifies it).
                    row = saved[depth];
                    None
                }
                0x0c => {
                    row.cfa_reg = c.uleb();
                    row.cfa_off = c.uleb() as i64;
                    None
                }
                0x0d => {
                    row.cfa_reg = c.uleb();
                    None
                }
                0x0e => {
                    row.cfa_off = c.uleb() as i64;
                    None
                }
                0x10 | 0x16 => {
                    let reg = c.uleb();
                    let n = c.uleb() as usize;
                    c.p += n;
                    set(&mut row, reg, RegRule::Other);
                    None
                }
                0x11 => {
                    let reg = c.uleb();
                    let off = c.sleb() * data_align;
                    set(&mut row, reg, RegRule::AtCfa(off));
                    None
                }
                0x12 => {
                    row.cfa_reg = c.uleb();
                    row.cfa_off = c.sleb() * data_align;
                    None
                }
                0x13 => {
                    row.cfa_off = c.sleb() * data_align;
                    None
                }
                0x14 | 0x15 => {
                    let reg = c.uleb();
                    if op == 0x14 {
                        c.uleb();
                    } else {
                        c.sleb();
                    }
                    set(&mut row, reg, RegRule::Other);
                    None
                }
                0x2e => {
                    c.uleb();
                    None
                }
                // DW_CFA_def_cfa_expression, set_loc, vendor opcodes: not interpreted.
                _ => return Err(Miss::Unsupported),
            },
        };
        if let Some(delta) = advance {
            loc = loc.wrapping_add((delta as i64 * code_align) as usize);
            if loc > pc {
                break;
            }
        }
    }
    Ok(row)
}

/// The rule for the frame executing at `pc` (`lookup` is `pc`, or `pc - 1` for a return
/// address), from the table or computed.
fn rule_for(lookup: usize) -> Result<Rule, Miss> {
    let mut obj = DlFindObject {
        flags: 0,
        map_start: core::ptr::null_mut(),
        map_end: core::ptr::null_mut(),
        link_map: core::ptr::null_mut(),
        eh_frame: core::ptr::null_mut(),
        reserved: [0; 7],
    };
    // SAFETY: `obj` is a valid out-parameter; the call neither allocates nor locks.
    if unsafe { _dl_find_object(lookup as *mut c_void, &mut obj) } != 0 || obj.eh_frame.is_null() {
        return Err(Miss::NoFrame);
    }
    let object = obj.map_start as usize;
    if let Some(rule) = cached(lookup, object) {
        return Ok(rule);
    }
    let rule = compute(obj.eh_frame as usize, lookup)?;
    MISSES.fetch_add(1, Ordering::Relaxed);
    remember(lookup, object, rule);
    Ok(rule)
}

/// The cached-rule walker (x86-64).
#[derive(Clone, Copy, Debug, Default)]
pub struct Cfi;

impl Cfi {
    /// Walks from the caller of `capture`; `None` when a frame needs libgcc.
    #[inline(always)]
    fn walk(
        frames: &mut [usize; MAX_FRAMES],
        skip: usize,
        rip: usize,
        rsp: usize,
        rbp: usize,
    ) -> Option<usize> {
        let (mut rip, mut rsp, mut rbp) = (rip, rsp, rbp);
        let mut first = true;
        let mut n = 0;
        let mut skipped = 0;
        while n < MAX_FRAMES {
            let lookup = if first { rip } else { rip - 1 };
            let rule = match rule_for(lookup) {
                Ok(rule) => rule,
                Err(Miss::NoFrame) => break,
                Err(Miss::Unsupported) => return None,
            };
            if rule.end {
                break;
            }
            let base = if rule.cfa_from_rbp { rbp } else { rsp };
            let cfa = base.wrapping_add(rule.cfa_off as isize as usize);
            if cfa % 8 != 0 || cfa < rsp + 8 || cfa - rsp > MAX_FRAME_BYTES {
                break;
            }
            let rbp_slot = cfa.wrapping_add(rule.rbp_at as isize as usize);
            // SAFETY: `cfa - 8` and the saved-rbp slot lie in `[rsp, cfa)`, the frame being left,
            // which the unwind tables describe as this thread's stack.
            let (ra, next_rbp) = unsafe {
                let ra = *((cfa - 8) as *const usize);
                let next_rbp = if rule.rbp_at != 0 && rbp_slot >= rsp && rbp_slot < cfa {
                    *(rbp_slot as *const usize)
                } else {
                    rbp
                };
                (ra, next_rbp)
            };
            if ra == 0 {
                break;
            }
            if skipped < skip {
                skipped += 1;
            } else {
                frames[n] = ra;
                n += 1;
            }
            rip = ra;
            rsp = cfa;
            rbp = next_rbp;
            first = false;
        }
        Some(n)
    }
}

impl Unwinder for Cfi {
    #[inline(never)]
    fn capture(&self, frames: &mut [usize; MAX_FRAMES], skip: usize) -> usize {
        let (rip, rsp, rbp): (usize, usize, usize);
        // SAFETY: reads three registers; `lea` of the next instruction touches no memory.
        unsafe {
            core::arch::asm!(
                "lea {0}, [rip]",
                "mov {1}, rsp",
                "mov {2}, rbp",
                out(reg) rip,
                out(reg) rsp,
                out(reg) rbp,
                options(nomem, nostack, preserves_flags)
            );
        }
        match Cfi::walk(frames, skip, rip, rsp, rbp) {
            Some(n) => n,
            // One more: this function's frame, which libgcc's walk sees and ours did not record.
            None => {
                FALLBACKS.fetch_add(1, Ordering::Relaxed);
                Libgcc.capture(frames, skip + 1)
            }
        }
    }
}
