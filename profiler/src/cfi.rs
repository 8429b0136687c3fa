//! [`Cfi`]: a DWARF call-frame-information walker for x86-64 that remembers, per return address,
//! the one rule it needs, so that a sample's stack costs a few loads per frame instead of
//! libgcc's full frame-state interpretation (about 95 ns a frame, 95% of a sample's cost).
//!
//! For each frame it needs three registers only: `rip`, `rsp` and `rbp`. The rule for an address
//! says where the canonical frame address (CFA) is (`rsp` or `rbp` plus an offset), that the
//! return address is at `CFA - 8` (always, on x86-64), and whether the caller's `rbp` was saved
//! at `CFA + k`. Rules are computed on a miss the way libgcc does (the object from
//! `_dl_find_object`, its `.eh_frame_hdr` binary-search table, the FDE and CIE, the CFA program
//! run up to the address) and kept in a fixed table of [`SLOTS`] entries in sets of [`WAYS`]
//! (so that a few return addresses of one stack that hash alike do not evict each other on
//! every walk), each tagged with the start of the object it came from; `_dl_find_object`
//! (lock-free, no allocation) is asked again on every walk, so an entry of an unloaded object is
//! never used for another one, except about the objects that cannot be unloaded while this code
//! runs (the executable, the C library, this module: `Resident`), whose mappings are known.
//! Within one walk, the object found for a frame also serves the next frames whose return
//! addresses lie in its mapping (`LastObject`): code with a frame on the stack being walked
//! cannot be unloaded while the walk runs, and most frames of a stack lie in the object of the
//! frame before.
//!
//! A walk that repeats the one before it on its thread (a program allocates from the same
//! stack again and again) takes its steps from a `Memo` instead: two stack reads a frame,
//! the rule table and the checks skipped where return address, object, `rsp` and `rbp` are the
//! ones remembered. A walk that repeated the memo's last one step for step wrote the same frames,
//! so the id a stack table gave them then serves again ([`Unwinder::capture_keyed`]): the
//! profiler need not hash the frames and look them up. A memo also keeps a few prefixes: the
//! first steps of walks (the allocator's own frames, and on through the program's and the C
//! library's), taken at a load and a compare each whatever the stack's depth, where the memo's
//! steps hold only at the depth they were taken at (`Prefix`).
//!
//! What it does not handle, it leaves to [`Libgcc`] for the whole capture: CFA or register rules
//! given as DWARF expressions (PLT stubs, signal frames), 64-bit DWARF, pointer encodings other
//! than the usual ones. Nothing here allocates, takes a lock, or panics: the table is written
//! under a try-lock (a writer that finds it held just does not cache) and read through a
//! per-entry sequence number (held across `fork` by [`lock_for_fork`], so a child never inherits
//! it held).
//!
//! # Mixed walks: code without unwind tables
//! A return address that no loaded object covers, or that its object has no FDE for (code a JIT
//! compiler wrote into anonymous memory, such as a JVM's compiled Java methods and interpreter,
//! or hand-written assembly), does not end the walk as it ends libgcc's: the walk steps out of
//! that frame by its frame pointer, `rbp` as recovered so far (restored from where the callee's
//! rule says it saved it, or never touched by the callee and so still the frame's own):
//! `[rbp]` is the caller's `rbp`, `[rbp + 8]` the return address, `rbp + 16` the caller's `rsp`.
//! At the next return address with an FDE (a JVM's call stub's caller, `libjvm`, the thread's
//! start), the walk is back on the tables, with `rsp` and `rbp` as the frame record gave them.
//! A null `rbp` or return address is the end of the stack (clone's child and `_start` clear
//! `rbp`). This needs the code to keep frame pointers (a JVM does with
//! `-XX:+PreserveFramePointer`, and keeps them in the interpreter anyway); without them `rbp`
//! holds anything, and the checks below stop the walk, usually at once.
//!
//! The tables vouch for the stack addresses a DWARF step reads; nothing vouches for a frame
//! pointer. So from the first frame-pointer step on, every read of the stack is checked: a
//! frame record must lie at or above the frame's `rsp` (so each step climbs by at least 16
//! bytes), 8-aligned, less than [`MAX_FRAME_BYTES`] above it, and in pages `mincore` says are
//! mapped; the DWARF steps after it check their frame's words the same way. The walk knows
//! that the pages from its own `rsp` up to where the tables led it are its stack, and asks the
//! kernel about those above only as it climbs: once up to where the stack probably ends
//! (`stack_end_hint`: the thread pointer, `__libc_stack_end`), else 64 KiB past what it needs
//! at a time, page by page near the top; one `mincore` per capture, usually. As for
//! [`FramePointers`](crate::unwind::FramePointers), a garbage `rbp` pointing into a mapped
//! `PROT_NONE` page (another thread's stack guard just above this stack) could still fault:
//! that needs a chain already corrupt and within a megabyte of the frame. Captures that never
//! leave the tables run the loop they ran before mixed walks existed (`Cfi::walk`); it hands
//! over to a cold function (`Cfi::mixed`) at the first frame without tables.
//!
//! An expression rule after a frame-pointer step ends the walk there rather than handing it to
//! libgcc, which would stop at the frame without tables anyway.
//!
//! Reads of the stack on DWARF steps are sanity-checked like the frame-pointer walker's (each
//! CFA above the last `rsp` by at most [`MAX_FRAME_BYTES`], 8-aligned); with correct unwind
//! tables they stay inside the frames being walked, as libgcc's do.

use core::ffi::c_void;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};

use crate::unwind::{Frames, Libgcc, StackKey, Unwinder, MAX_FRAMES, MAX_FRAME_BYTES};

/// Entries in the rule table (a power of two).
pub const SLOTS: usize = 4096;
/// Entries per set: an address's rule is in one of the `WAYS` entries of its set, the most
/// recently remembered first.
pub const WAYS: usize = 4;

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

#[allow(clippy::declare_interior_mutable_const)]
const EMPTY_SET: [Slot; WAYS] = [EMPTY_SLOT; WAYS];
static TABLE: [[Slot; WAYS]; SLOTS / WAYS] = [EMPTY_SET; SLOTS / WAYS];
/// Held by the one thread writing the table.
static WRITING: AtomicBool = AtomicBool::new(false);
/// Rules computed (a statistic, and what the tests look at).
pub static MISSES: AtomicU64 = AtomicU64::new(0);
/// Captures handed to libgcc because of a frame this walker does not interpret.
pub static FALLBACKS: AtomicU64 = AtomicU64::new(0);

/// The set of entries `pc`'s rule may be in.
fn set_of(pc: usize) -> &'static [Slot; WAYS] {
    let h = (pc as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 52;
    &TABLE[h as usize & (SLOTS / WAYS - 1)]
}

impl Slot {
    /// The rule in this entry if it is `pc`'s in `object`, read consistently.
    fn read(&self, pc: usize, object: usize) -> Option<Rule> {
        let s1 = self.seq.load(Ordering::Acquire);
        if s1 & 1 != 0 {
            return None;
        }
        let (p, o, r) = (
            self.pc.load(Ordering::Relaxed),
            self.object.load(Ordering::Relaxed),
            self.rule.load(Ordering::Relaxed),
        );
        core::sync::atomic::fence(Ordering::Acquire);
        if self.seq.load(Ordering::Relaxed) != s1 || p != pc || o != object || r & VALID == 0 {
            return None;
        }
        Some(Rule::unpack(r))
    }

    /// Stores an entry. Only the thread holding [`WRITING`] calls this.
    fn write(&self, pc: usize, object: usize, rule: u64) {
        let s = self.seq.load(Ordering::Relaxed);
        self.seq.store(s.wrapping_add(1), Ordering::Relaxed);
        core::sync::atomic::fence(Ordering::Release);
        self.pc.store(pc, Ordering::Relaxed);
        self.object.store(object, Ordering::Relaxed);
        self.rule.store(rule, Ordering::Relaxed);
        self.seq.store(s.wrapping_add(2), Ordering::Release);
    }
}

fn cached(pc: usize, object: usize) -> Option<Rule> {
    set_of(pc).iter().find_map(|slot| slot.read(pc, object))
}

/// Fork `prepare` handler: waits out a writer (a few stores, nothing that can block) and keeps
/// the table closed, so that a child does not inherit it held by a thread it does not have.
// In the allocator's hot text: every program that forks runs it.
#[link_section = ".text.hot.tally"]
pub fn lock_for_fork() {
    while WRITING.swap(true, Ordering::Acquire) {
        core::hint::spin_loop();
    }
    // The memos too, each held for one walk at most.
    for busy in &MEMO_BUSY {
        while busy.swap(true, Ordering::Acquire) {
            core::hint::spin_loop();
        }
    }
}

/// Fork parent and child handler: opens the table (and the memos) again.
// In the allocator's hot text: every program that forks runs it.
#[link_section = ".text.hot.tally"]
pub fn unlock_after_fork() {
    for busy in &MEMO_BUSY {
        busy.store(false, Ordering::Release);
    }
    WRITING.store(false, Ordering::Release);
}

/// Puts `pc`'s rule first in its set, moving the others down one (the last one out), unless
/// another thread is writing the table.
fn remember(pc: usize, object: usize, rule: Rule) {
    if WRITING.swap(true, Ordering::Acquire) {
        return;
    }
    let set = set_of(pc);
    // The entries before the one this replaces: `pc`'s own if it is there (another thread
    // remembered it since this one looked), else the last.
    let until = set
        .iter()
        .position(|slot| slot.pc.load(Ordering::Relaxed) == pc)
        .unwrap_or(WAYS - 1);
    for i in (0..until).rev() {
        let from = &set[i];
        set[i + 1].write(
            from.pc.load(Ordering::Relaxed),
            from.object.load(Ordering::Relaxed),
            from.rule.load(Ordering::Relaxed),
        );
    }
    set[0].write(pc, object, rule.pack());
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
    /// encodings not handled (text- or function-relative, aligned). For an indirect one
    /// (`DW_EH_PE_indirect`, as personality pointers are written) it is the address where the
    /// pointer is stored, not read: the walker only skips those.
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
        // 8-aligned, as the CFA is, so the saved `rbp` is read aligned (`read_step`).
        RegRule::AtCfa(off) if off < 0 && off >= i16::MIN as i64 && off % 8 == 0 => off as i16,
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

/// The loaded object a walk found last: `[start, end)` is its mapping, `eh_frame` its unwind
/// tables. A walk looks the object up (among the [`Resident`] ones, else with `_dl_find_object`)
/// only for a return address outside it: most frames of a stack are in the object of the frame
/// before (a Rust program's all but the C library's). Sound within one walk only: the object of a frame
/// on the stack being walked stays loaded while the walk runs. `resident` is `i + 1` when it is
/// [`RESIDENT`]`[i]`, else 0.
#[derive(Clone, Copy, Debug)]
struct LastObject {
    start: usize,
    end: usize,
    eh_frame: usize,
    resident: usize,
}

impl LastObject {
    /// No object yet: every address is outside.
    const NONE: LastObject = LastObject {
        start: 0,
        end: 0,
        eh_frame: 0,
        resident: 0,
    };
}

/// Objects that stay loaded as long as this code does, so that a walk need not ask
/// `_dl_find_object` about them (about 45 instructions a call, three calls a capture in a Rust
/// program): this module, the main executable and the C library
/// ([`tally_pal::process::resident_code`] says why each stays), those of them with unwind
/// tables. Found by the first walk that needs an object; [`RESIDENTS`] publishes how many
/// entries are complete, so a walk never reads one being written (a walk meanwhile, or in a
/// child forked meanwhile, just asks the loader). The table is in this module's own data, so it
/// cannot outlive the objects it names.
struct Resident {
    start: AtomicUsize,
    end: AtomicUsize,
    eh_frame: AtomicUsize,
}

#[allow(clippy::declare_interior_mutable_const)]
const NO_RESIDENT: Resident = Resident {
    start: AtomicUsize::new(0),
    end: AtomicUsize::new(0),
    eh_frame: AtomicUsize::new(0),
};
static RESIDENT: [Resident; 3] = [NO_RESIDENT; 3];
/// Invariant: `RESIDENT[..n]` are complete and never written again once this is `n + 1`; 0
/// until they are found.
static RESIDENTS: AtomicUsize = AtomicUsize::new(0);
/// Taken by the one thread that finds the resident objects (never released: found once).
static FINDING_RESIDENTS: AtomicBool = AtomicBool::new(false);
/// Times a walk asked `_dl_find_object` (a statistic, and what the tests look at).
pub static OBJECT_LOOKUPS: AtomicU64 = AtomicU64::new(0);
/// Times a walk looked for a return address among the objects that stay loaded (a statistic, and
/// what the tests look at; counted without a locked instruction, so walks on several threads at
/// once may lose some of each other's counts).
pub static RESIDENT_LOOKUPS: AtomicU64 = AtomicU64::new(0);

/// The resident object holding `lookup`, if it is in one.
#[inline(always)]
fn resident(lookup: usize) -> Option<LastObject> {
    RESIDENT_LOOKUPS.store(RESIDENT_LOOKUPS.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
    let mut n = RESIDENTS.load(Ordering::Acquire);
    if n == 0 {
        n = find_residents();
    }
    RESIDENT[..n.saturating_sub(1)]
        .iter()
        .enumerate()
        .find_map(|(i, r)| {
            let (start, end) = (r.start.load(Ordering::Relaxed), r.end.load(Ordering::Relaxed));
            (lookup >= start && lookup < end).then(|| LastObject {
                start,
                end,
                eh_frame: r.eh_frame.load(Ordering::Relaxed),
                resident: i + 1,
            })
        })
}

/// The resident object a [`LastObject`] with `resident` named (none for 0). Its entry was
/// complete then, and is never written again (the [`RESIDENTS`] invariant).
#[inline(always)]
fn resident_at(resident: usize) -> Option<LastObject> {
    let r = RESIDENT.get(resident.wrapping_sub(1))?;
    Some(LastObject {
        start: r.start.load(Ordering::Relaxed),
        end: r.end.load(Ordering::Relaxed),
        eh_frame: r.eh_frame.load(Ordering::Relaxed),
        resident,
    })
}

/// Fills [`RESIDENT`] (one thread, once; the others meanwhile find none); returns
/// [`RESIDENTS`].
#[cold]
#[inline(never)]
fn find_residents() -> usize {
    if FINDING_RESIDENTS.swap(true, Ordering::Acquire) {
        return RESIDENTS.load(Ordering::Acquire);
    }
    let mut n = 0;
    for pc in tally_pal::process::resident_code() {
        let Some(obj) = tally_pal::process::loaded_object(pc) else {
            continue;
        };
        let known = RESIDENT[..n]
            .iter()
            .any(|r| r.start.load(Ordering::Relaxed) == obj.start);
        if obj.eh_frame != 0 && !known {
            RESIDENT[n].start.store(obj.start, Ordering::Relaxed);
            RESIDENT[n].end.store(obj.end, Ordering::Relaxed);
            RESIDENT[n].eh_frame.store(obj.eh_frame, Ordering::Relaxed);
            n += 1;
        }
    }
    RESIDENTS.store(n + 1, Ordering::Release);
    n + 1
}

/// The rule for the frame executing at `pc` (`lookup` is `pc`, or `pc - 1` for a return
/// address), from the table or computed, outside a walk.
#[cfg(test)]
fn rule_for(lookup: usize) -> Result<Rule, Miss> {
    let mut last = LastObject::NONE;
    rule_in_walk(lookup, &mut last)
}

/// The rule for the frame executing at `pc` (`lookup` is `pc`, or `pc - 1` for a return
/// address), from the table or computed, within a walk that found `last` for an earlier frame
/// (updated to `lookup`'s object). Inlined into both walks: it is most of a step.
#[inline(always)]
fn rule_in_walk(lookup: usize, last: &mut LastObject) -> Result<Rule, Miss> {
    object_in_walk(lookup, last)?;
    rule_in_object(lookup, last)
}

/// Makes `last` the object holding `lookup`, unless it is already: a [`Resident`] one, else
/// the one `_dl_find_object` names. [`Miss::NoFrame`] when no object with unwind tables holds
/// it.
#[inline(always)]
fn object_in_walk(lookup: usize, last: &mut LastObject) -> Result<(), Miss> {
    if lookup < last.start || lookup >= last.end {
        *last = match resident(lookup) {
            Some(object) => object,
            None => {
                OBJECT_LOOKUPS.fetch_add(1, Ordering::Relaxed);
                // `_dl_find_object`: neither allocates nor locks.
                match tally_pal::process::loaded_object(lookup) {
                    Some(obj) if obj.eh_frame != 0 => LastObject {
                        start: obj.start,
                        end: obj.end,
                        eh_frame: obj.eh_frame,
                        resident: 0,
                    },
                    _ => return Err(Miss::NoFrame),
                }
            }
        };
    }
    Ok(())
}

/// The rule for `lookup` in `object` (which holds it), from the table or computed.
#[inline(always)]
fn rule_in_object(lookup: usize, object: &LastObject) -> Result<Rule, Miss> {
    if let Some(rule) = cached(lookup, object.start) {
        return Ok(rule);
    }
    let rule = compute(object.eh_frame, lookup)?;
    MISSES.fetch_add(1, Ordering::Relaxed);
    remember(lookup, object.start, rule);
    Ok(rule)
}

/// Steps a [`Memo`] remembers.
const MEMO_STEPS: usize = 64;
/// Memos: a walk takes the one its thread's pointer hashes to, if no other walk holds it.
const MEMOS: usize = 8;

/// The steps a walk took, one by one: the next walk from the same place (a program allocates
/// from the same stack again and again) finds step `k` at `steps[k]` by comparing four words,
/// where the rule table costs a hash, a set of entries and a sequence number, and the step's
/// checks a dozen more (about 45 instructions, most of a step). A step is taken from the memo
/// only when its return address, the start of the object the walk found it in, and the frame's
/// `rsp` and `rbp` are the ones remembered (`rbp` only where the rule computes the CFA from it):
/// the rule is then the one the table would give (its entries are tagged with the same two),
/// and `locate` would answer the same, since it depends on nothing else. Only the reads are
/// made again. (Compared where the rule does not use it, `rbp`, which code built without frame
/// pointers uses as any other register, sent a third of the steps of the suite's `size_churn`
/// to the rule table, and so every walk to the stack table.) The object is not looked up for a
/// step taken from the memo: it is the walk's last one if that holds the return address, else
/// the resident object the step remembers, if it was in one (a [`Resident`] object holds the
/// same addresses as long as this code runs; looking it up again cost about 30 instructions at
/// each change of object, four a walk in a C program). Invariant: memo `i`'s `steps` and
/// `last` are read and written only by the walk that holds `MEMO_BUSY[i]`; a walk that finds it
/// held goes without (never waits: nothing here can block a `malloc`).
///
/// `last` describes the walk the steps came from, for [`StackKey`]: a walk that took all its
/// steps from the memo and ended the way `last` says, after as many steps and frames, with the
/// same last frame, wrote the frames that walk wrote (every frame but the last is the return
/// address the next step compared, and the last one is compared here). Invariant: `last`
/// describes `steps[..last.steps]` as they are: every change of a step ([`MemoHold::set`]) gives
/// `last` a new walk number and no shape a walk can match, until the walk that changed it ends
/// and describes itself.
struct Memo {
    steps: core::cell::UnsafeCell<[MemoStep; MEMO_STEPS]>,
    last: core::cell::UnsafeCell<LastWalk>,
    prefixes: core::cell::UnsafeCell<Prefixes>,
}

/// Steps a [`Prefix`] holds at most.
const PREFIX_STEPS: usize = 16;
/// Prefixes a [`Memo`] holds.
const PREFIXES: usize = 8;

/// The first steps of a walk, kept so that a later walk from the same place takes them at a few
/// instructions each, whatever its stack depth: a sample's walk starts inside the allocator, and
/// its first four or five steps (the capture, the sampling hook, the slow path, `malloc`) lead
/// out of the allocator's own frames, the same few sequences at every sample; but the memo
/// compares each step's `rsp`, and so misses all of them as soon as the program calls `malloc`
/// at another depth (about 37 instructions a step taken from the memo, some 80 from the rule
/// table).
///
/// A prefix step is one whose rule computes the CFA from `rsp` (not `rbp`), in the object that
/// holds the walk's start (the code doing the walk, so loaded while any walk runs) or in a
/// [`Resident`] one (the program, the C library: loaded as long as this code is). For such a
/// step the rule depends only on the address it is taken at, so its CFA and the slot of the
/// caller's `rbp` lie at fixed distances from the `rsp` it starts from; chained, every step of
/// the prefix lies at a fixed distance from the capture's `rsp`, as long as the return
/// addresses that chose the rules are the same. Step 0 is pinned by the capture's `rip`, step
/// `i + 1` by the return address step `i` read: a walk takes step 0 if its `rip` is `rip`, and
/// step `i + 1` while the return address it read at step `i` is `ra[i]`. The step where they
/// differ is still taken (its rule was pinned by the step before); the walk goes on from there
/// as any other, with the memo's steps from the same index on. A prefix vouches for itself: the
/// memo's steps below that index are neither read nor written, and the memo's last walk
/// records which prefix gave how many steps ([`PrefixTaken::mark`]), so that a walk repeats it
/// only if it took the same ones, which wrote the same frames.
///
/// The first steps of a prefix, in the object of the walk's start, are the allocator's own
/// frames; the program's frames after them differ from sample to sample in most programs, and a
/// prefix's steps past the allocator's serve a program that allocates from the same place
/// again and again (as a walk that repeats the memo's would). A new prefix is made for a walk
/// that parts from the ones held inside the allocator's frames only: eight hold its few paths,
/// and a program with many allocation sites does not make one at every sample.
#[derive(Clone, Copy)]
struct Prefix {
    /// Steps held (0: none).
    len: usize,
    /// Of those, the first ones in the object of the walk's start.
    own: usize,
    /// Distinct for every prefix a memo makes (from 1), for [`PrefixTaken::mark`].
    id: u32,
    /// The capture's `rip`, which pins step 0.
    rip: usize,
    /// Per step, the CFA less the capture's `rsp`.
    cfa: [u32; PREFIX_STEPS],
    /// Per step, where the caller's `rbp` is after it, less the capture's `rsp`: the slot the
    /// step, or the latest one before it that saved `rbp`, restores it from (0: no step so far
    /// did, `rbp` is the capture's).
    rbp_slot: [u32; PREFIX_STEPS],
    /// Per step, the return address the walk read there.
    ra: [usize; PREFIX_STEPS],
    /// The object of the last step, for the walk's steps after it.
    object: LastObject,
}

/// A memo's prefixes (the allocator's entry points and slow paths give a few sequences of own
/// frames), and the object they are all in.
struct Prefixes {
    list: [Prefix; PREFIXES],
    /// The entry of `list` the next new prefix replaces.
    next: usize,
    /// The entry the last walk took its prefix from.
    used: usize,
    /// The last prefix's id.
    made: u32,
    /// The object holding the walks' start (valid once a prefix is made).
    object: LastObject,
}

const NO_PREFIX: Prefix = Prefix {
    len: 0,
    own: 0,
    id: 0,
    rip: 0,
    cfa: [0; PREFIX_STEPS],
    rbp_slot: [0; PREFIX_STEPS],
    ra: [0; PREFIX_STEPS],
    object: LastObject::NONE,
};

/// Steps taken from a memo's prefixes (a statistic, and what the tests look at; counted
/// like [`MEMO_HITS`]).
pub static PREFIX_HITS: AtomicU64 = AtomicU64::new(0);

/// How a walk ended, for [`LastWalk`].
#[derive(Clone, Copy, PartialEq, Eq)]
enum WalkEnd {
    /// At [`MAX_FRAMES`] frames.
    Full,
    /// At the outermost frame (its rule's return address is undefined).
    Outermost,
    /// At a return address 0.
    NoReturn,
    /// At a CFA that was not sane (after a step not from the memo).
    Insane,
    /// No walk can end so: the steps changed since `last` was written.
    Changed,
}

/// The walk a [`Memo`]'s steps came from: its shape, and the stack id a table gave its frames.
#[derive(Clone, Copy)]
struct LastWalk {
    /// Bumped whenever the steps change.
    walk: u64,
    steps: usize,
    /// Frames written (given the steps, they tell the frames skipped).
    frames: usize,
    end: WalkEnd,
    /// The last frame written (0 if none).
    last_frame: usize,
    /// The table that gave `stack` for these frames (0: none yet).
    table: usize,
    stack: u32,
    /// The prefix its first steps came from ([`PrefixTaken::mark`]; 0: none).
    prefix: u64,
}

/// A walk that ended with its memo held, described for [`MemoHold::conclude`].
struct Walked {
    steps: usize,
    hits: usize,
    frames: usize,
    end: WalkEnd,
    last_frame: usize,
    prefix: u64,
}

/// One remembered step: out of the frame at `rsp` with `rbp`, executing at `lookup` in the
/// object starting at `object` (`resident` as in its [`LastObject`]), `locate` gave `cfa` and
/// `rbp_slot`; `cfa` 0: the outermost frame (its rule's return address is undefined). `rbp` is
/// [`ANY_RBP`] where the rule does not compute the CFA from it (most frames of code built
/// without frame pointers, which keeps anything in `rbp`): any `rbp` then takes the step.
#[derive(Clone, Copy)]
struct MemoStep {
    lookup: usize,
    object: usize,
    resident: usize,
    rsp: usize,
    rbp: usize,
    cfa: usize,
    rbp_slot: usize,
}

// SAFETY: `steps` and `last` are touched only under the memo's `MEMO_BUSY` flag (the type's
// invariant).
unsafe impl Sync for Memo {}

/// A [`MemoStep`]'s `rbp` when the step does not depend on it. No step whose CFA comes from
/// `rbp` can be remembered with this `rbp`: the CFA `rbp + offset` is then `offset - 1`, which
/// `locate` refuses (misaligned for the multiples of 8 compilers write, else below the frame's
/// `rsp` or far above it), and the walk ends there.
const ANY_RBP: usize = usize::MAX;

const NO_STEP: MemoStep = MemoStep {
    lookup: 0,
    object: 0,
    resident: 0,
    rsp: 0,
    rbp: 0,
    cfa: 0,
    rbp_slot: 0,
};
#[allow(clippy::declare_interior_mutable_const)]
const EMPTY_MEMO: Memo = Memo {
    steps: core::cell::UnsafeCell::new([NO_STEP; MEMO_STEPS]),
    last: core::cell::UnsafeCell::new(LastWalk {
        walk: 0,
        steps: 0,
        frames: 0,
        end: WalkEnd::Changed,
        last_frame: 0,
        table: 0,
        stack: 0,
        prefix: 0,
    }),
    prefixes: core::cell::UnsafeCell::new(Prefixes {
        list: [NO_PREFIX; PREFIXES],
        next: 0,
        used: 0,
        made: 0,
        object: LastObject::NONE,
    }),
};
static MEMO: [Memo; MEMOS] = [EMPTY_MEMO; MEMOS];
/// Memo `i` is held while `MEMO_BUSY[i]` is set. Apart from the memos (about 6 KiB each), so that the
/// fork handlers, which take them all, write one line and not a page of each memo: every program
/// that forks runs them, the profiler on or not.
static MEMO_BUSY: [AtomicBool; MEMOS] = [const { AtomicBool::new(false) }; MEMOS];
/// Steps taken from a memo (a statistic, and what the tests look at; walks on several threads at
/// once may lose some of each other's counts).
pub static MEMO_HITS: AtomicU64 = AtomicU64::new(0);

/// A walk's hold on a [`Memo`] (and its index in [`MEMO`]): released when dropped.
struct MemoHold(&'static Memo, u32);

impl MemoHold {
    /// The calling thread's memo, if no other walk holds it.
    #[inline(always)]
    fn take() -> Option<MemoHold> {
        MemoHold::take_at(thread_pointer().wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 61 & (MEMOS - 1))
    }

    /// Memo `index`, if no other walk holds it.
    #[inline(always)]
    fn take_at(index: usize) -> Option<MemoHold> {
        let (memo, busy) = (MEMO.get(index)?, MEMO_BUSY.get(index)?);
        if busy.swap(true, Ordering::Acquire) {
            return None;
        }
        Some(MemoHold(memo, index as u32))
    }

    /// Step `k`'s `(cfa, rbp_slot)` if it was remembered for `lookup` in the object holding it,
    /// `rsp` and `rbp`; `last` is the walk's object for the frame before, made `lookup`'s then
    /// (see [`Memo`]).
    #[inline(always)]
    fn step(
        &self,
        k: usize,
        lookup: usize,
        last: &mut LastObject,
        rsp: usize,
        rbp: usize,
    ) -> Option<(usize, usize)> {
        // SAFETY: this hold owns the memo's busy flag, so no other walk touches the steps.
        let s = unsafe { (*self.0.steps.get()).get(k)? };
        if s.lookup != lookup || s.rsp != rsp || (s.rbp != rbp && s.rbp != ANY_RBP) {
            return None;
        }
        if lookup >= last.start && lookup < last.end {
            if s.object != last.start {
                return None;
            }
        } else {
            *last = resident_at(s.resident)?;
        }
        Some((s.cfa, s.rbp_slot))
    }

    /// Takes the steps of the memo's [`Prefix`]es that apply to a walk starting at `at` (its
    /// capture's frame, nothing skipped), those of the prefix that applies longest: writes their
    /// frames, moves `at` to the frame after the last one and `last` to their object.
    #[inline(always)]
    fn take_prefix(&self, at: &mut Position, frames: &mut Frames, last: &mut LastObject) -> PrefixTaken {
        // SAFETY: this hold owns the memo's busy flag, so no other walk touches the prefixes.
        let all = unsafe { &mut *self.0.prefixes.get() };
        let (rsp, rip) = (at.rsp, at.rip);
        let mut best = PrefixTaken::NONE;
        let mut ra = 0;
        // The prefix the last walk took first: a program's samples mostly come one path at a
        // time.
        for k in (all.used..PREFIXES).chain(0..all.used) {
            let p = &all.list[k];
            if p.len == 0 || p.rip != rip {
                continue;
            }
            let mut i = 0;
            let read = loop {
                // SAFETY: step `i` is pinned (see `Prefix`): this frame runs the code at the
                // address the step was made for, whose rule puts the CFA at this distance from
                // the capture's `rsp`, inside the frames below it on this thread's live stack,
                // 8-aligned (`locate` checked it).
                let ra = unsafe { *((rsp + p.cfa[i] as usize - 8) as *const usize) };
                frames[i].write(ra);
                i += 1;
                // A return address 0 is no `ra[i - 1]`: the prefix (made of steps that read
                // none) stops there.
                if i == p.len || ra != p.ra[i - 1] {
                    break ra;
                }
            };
            if i > best.steps {
                best = PrefixTaken {
                    steps: i,
                    index: k,
                    mark: (p.id as u64) << 8 | i as u64,
                    // Parted from the prefix inside the allocator's frames.
                    short: i < p.len && i <= p.own,
                };
                ra = read;
            }
            if i == p.len {
                break;
            }
        }
        if best.steps == 0 {
            return best;
        }
        all.used = best.index;
        let p = &all.list[best.index];
        // The frames of the prefix that applied longest are in `frames`: a shorter one that ran
        // after it read the same words for the steps it took.
        let t = best.steps;
        if ra == 0 {
            // As `Position::take` ends a walk at a return address 0: not written.
            at.n = t - 1;
            return PrefixTaken { short: false, ..best };
        }
        let slot = p.rbp_slot[t - 1];
        let rbp = if slot == 0 {
            at.rbp
        } else {
            // SAFETY: as above: the slot lies in the frames the steps left, 8-aligned (`compute`
            // checked the rule's offset).
            unsafe { *((rsp + slot as usize) as *const usize) }
        };
        *at = Position {
            rip: ra,
            rsp: rsp + p.cfa[t - 1] as usize,
            rbp,
            first: false,
            n: t,
            skipped: 0,
        };
        *last = p.object;
        best
    }

    /// Makes a [`Prefix`] of the first steps of the walk that just ended with this hold (it
    /// replaces the oldest one): the walk started at `rip` and `rsp`, skipped no frame, took
    /// `taken`'s steps from a prefix and its next ones (`steps` in all) from the memo's steps
    /// of the same indices or into them, and wrote `frames[..n]`. Nothing if no step after the
    /// prefix's is one a prefix can hold. Returns the [`PrefixTaken::mark`] of a walk that takes
    /// the new prefix whole: one that then repeats the memo's steps after it repeats this walk.
    #[cold]
    #[inline(never)]
    fn make_prefix(
        &self,
        rip: usize,
        rsp: usize,
        taken: &PrefixTaken,
        steps: usize,
        frames: &Frames,
        n: usize,
    ) -> Option<u64> {
        // SAFETY: as in `take_prefix`.
        let (all, memo) = unsafe { (&mut *self.0.prefixes.get(), &*self.0.steps.get()) };
        let mut p = NO_PREFIX;
        let t = taken.steps;
        if t != 0 {
            let from = &all.list[taken.index];
            p.cfa[..t].copy_from_slice(&from.cfa[..t]);
            p.rbp_slot[..t].copy_from_slice(&from.rbp_slot[..t]);
            // `take_prefix` makes a walk short only where it parted inside the own steps.
            p.own = t;
            p.object = all.object;
        } else {
            let first = memo.first()?;
            if first.lookup != rip || first.rsp != rsp {
                return None;
            }
            if all.object.start != first.object || all.made == 0 {
                let mut object = LastObject::NONE;
                if object_in_walk(rip, &mut object).is_err() || object.start != first.object {
                    return None;
                }
                all.object = object;
                all.list = [NO_PREFIX; PREFIXES];
            }
        }
        // Distances from the capture's `rsp`: each memo step's own frame size added up (the
        // steps may come from walks at other depths).
        let (mut at, mut rbp_at) = if t == 0 {
            (0, 0)
        } else {
            (p.cfa[t - 1] as usize, p.rbp_slot[t - 1])
        };
        let mut len = t;
        for (i, s) in memo
            .iter()
            .enumerate()
            .take(steps.min(n).min(PREFIX_STEPS))
            .skip(t)
        {
            let own = s.object == all.object.start;
            if !(own || s.resident != 0) || s.rbp != ANY_RBP || s.cfa == 0 {
                break;
            }
            let cfa = at + (s.cfa - s.rsp);
            let slot = at + s.rbp_slot.wrapping_sub(s.rsp);
            if cfa > u32::MAX as usize || (s.rbp_slot != 0 && slot > u32::MAX as usize) {
                break;
            }
            if s.rbp_slot != 0 {
                rbp_at = slot as u32;
            }
            p.cfa[i] = cfa as u32;
            p.rbp_slot[i] = rbp_at;
            if own && p.own == i {
                p.own = i + 1;
                p.object = all.object;
            } else {
                // A resident object (the start's own, too, past another object's steps).
                match resident_at(s.resident) {
                    Some(object) if object.start == s.object => p.object = object,
                    _ => break,
                }
            }
            len = i + 1;
            at = cfa;
        }
        if len == t || len < 2 {
            return None;
        }
        for (i, ra) in p.ra.iter_mut().enumerate().take(len) {
            // SAFETY: the walk wrote `frames[..n]`, and `len <= n`.
            *ra = unsafe { frames[i].assume_init() };
        }
        all.made += 1;
        p.id = all.made;
        p.len = len;
        p.rip = rip;
        all.list[all.next] = p;
        all.next = (all.next + 1) % PREFIXES;
        Some((p.id as u64) << 8 | len as u64)
    }

    /// After [`MemoHold::conclude`] described the walk that made a prefix: the walk that takes
    /// that prefix whole and then the memo's steps after it (`mark`) repeats it, frame for frame.
    fn relabel(&self, mark: u64) {
        // SAFETY: as in `step`.
        unsafe { (*self.0.last.get()).prefix = mark };
    }

    /// Remembers step `k`; the memo's last walk is no longer what its steps describe.
    #[inline(always)]
    fn set(&self, k: usize, step: MemoStep) {
        // SAFETY: as in `step`.
        let last = unsafe { &mut *self.0.last.get() };
        if last.end != WalkEnd::Changed {
            last.walk += 1;
            last.end = WalkEnd::Changed;
            last.table = 0;
        }
        // SAFETY: as in `step`.
        if let Some(s) = unsafe { (*self.0.steps.get()).get_mut(k) } {
            *s = step;
        }
    }

    /// The key for a walk that ended with this hold: the memo's last walk's, with its stack id,
    /// if `walked` repeated it step for step (so wrote its frames: see [`Memo`]); else `walked`
    /// becomes the last walk, under a new number and with no id yet.
    #[inline(always)]
    fn conclude(&self, walked: Walked) -> StackKey {
        // SAFETY: as in `step`.
        let last = unsafe { &mut *self.0.last.get() };
        let repeated = walked.hits == walked.steps
            && walked.prefix == last.prefix
            && walked.end == last.end
            && walked.steps == last.steps
            && walked.frames == last.frames
            && walked.last_frame == last.last_frame;
        if !repeated {
            *last = LastWalk {
                walk: last.walk + 1,
                steps: walked.steps,
                frames: walked.frames,
                end: walked.end,
                last_frame: walked.last_frame,
                table: 0,
                stack: 0,
                prefix: walked.prefix,
            };
        }
        StackKey {
            memo: self.1,
            walk: last.walk,
            table: last.table,
            stack: last.stack,
        }
    }
}

impl Drop for MemoHold {
    fn drop(&mut self) {
        // `take_at` made the hold with a valid index.
        if let Some(busy) = MEMO_BUSY.get(self.1 as usize) {
            busy.store(false, Ordering::Release);
        }
    }
}

/// The thread pointer (`fs:0`): distinct for every live thread.
#[inline(always)]
fn thread_pointer() -> usize {
    let tp: usize;
    // SAFETY: reads the thread pointer: `fs:0` holds its own address on x86-64 Linux.
    unsafe {
        core::arch::asm!(
            "mov {}, qword ptr fs:[0]",
            out(reg) tp,
            options(pure, readonly, nostack, preserves_flags)
        );
    }
    tp
}

/// Where a walk may read the stack without unwind tables vouching for the address: every page
/// of `[the capturing thread's rsp, to)` is mapped. `to` is 0 while the walk has only taken
/// steps the tables describe (which it trusts, as libgcc does); set at its first frame-pointer
/// step and extended with `mincore` ([`tally_pal::memory::range_is_mapped`]) as the walk
/// climbs: first, once, up to where the stack probably ends ([`stack_end_hint`]), which is one
/// system call for the whole walk when it is right; then [`AHEAD`] bytes past the address
/// needed at a time, until a range that far is not all mapped; then page by page.
struct Readable {
    to: usize,
    hint: usize,
    ahead: usize,
}

/// How far past the address it needs [`Readable`] asks the kernel about, once the hint failed.
const AHEAD: usize = 16 * tally_pal::PAGE;
/// The farthest above the walk's `rsp` that [`stack_end_hint`] may be (the kernel is asked about
/// every page in between: 256 pages per call).
const HINT_MAX_BYTES: usize = 4 << 20;

extern "C" {
    /// glibc (the dynamic loader): near the top of the main thread's stack.
    static __libc_stack_end: *mut c_void;
}

/// Where the stack at `rsp` probably ends, from what glibc's layout suggests: a thread that
/// `pthread_create` started runs on a stack mapped just below its thread descriptor, which the
/// thread pointer (`fs:0`) addresses; the main thread's stack ends above `__libc_stack_end`.
/// Only a hint (a thread on a stack of its own making, a signal stack): [`Readable`] asks the
/// kernel before it believes it. 0 when neither is a little above `rsp`.
fn stack_end_hint(rsp: usize) -> usize {
    let thread_pointer = thread_pointer();
    // SAFETY: a pointer-sized variable the dynamic loader sets before any code runs.
    let main_end = unsafe { __libc_stack_end } as usize;
    [thread_pointer, main_end]
        .into_iter()
        .find(|&end| end > rsp && end - rsp <= HINT_MAX_BYTES)
        .map_or(0, |end| (end + 1).next_multiple_of(tally_pal::PAGE))
}

impl Readable {
    const TRUSTED: Readable = Readable {
        to: 0,
        hint: 0,
        ahead: AHEAD,
    };

    /// Starts checking at a frame whose stack pointer is `rsp`: the tables led the walk there,
    /// and it read the word below `rsp`, so the pages up to `rsp` are the thread's stack.
    fn start(&mut self, rsp: usize) {
        if self.to == 0 {
            self.to = rsp.next_multiple_of(tally_pal::PAGE);
            self.hint = stack_end_hint(rsp);
        }
    }

    /// Whether the words below `end` (from the thread's rsp) can be read; asks the kernel about
    /// the pages not known yet. Always true before [`Readable::start`].
    #[inline(always)]
    fn covers(&mut self, end: usize) -> bool {
        self.to == 0 || end <= self.to || self.extend(end)
    }

    #[cold]
    #[inline(never)]
    fn extend(&mut self, end: usize) -> bool {
        let need = end.next_multiple_of(tally_pal::PAGE);
        if self.hint >= need {
            let hint = core::mem::take(&mut self.hint);
            if tally_pal::memory::range_is_mapped(self.to, hint) {
                self.to = hint;
                return true;
            }
        }
        if self.ahead != 0 {
            let ahead = need.saturating_add(self.ahead);
            if tally_pal::memory::range_is_mapped(self.to, ahead) {
                self.to = ahead;
                return true;
            }
            self.ahead = 0;
        }
        if tally_pal::memory::range_is_mapped(self.to, need) {
            self.to = need;
            return true;
        }
        false
    }
}

/// What a frame-pointer step found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FpStep {
    /// The caller: its return address, `rsp` and `rbp`.
    Caller { ra: usize, rsp: usize, rbp: usize },
    /// The end of the stack: a null frame pointer or return address.
    End,
    /// A frame pointer that cannot be this frame's: the walk stops.
    Refused,
}

/// One step out of the frame at `rsp` by its frame pointer `rbp`: the frame record `[rbp]` =
/// caller's `rbp`, `[rbp + 8]` = return address, caller's `rsp` = `rbp + 16`. The record must
/// lie in the frame (at or above `rsp`, 8-aligned, within [`MAX_FRAME_BYTES`]) and in memory
/// [`Readable`] finds mapped. Each step climbs by at least 16 bytes, since the caller's record
/// must lie at or above `rbp + 16`. 8-aligned, not 16: HotSpot's interpreter frames are.
fn frame_pointer_step(rsp: usize, rbp: usize, readable: &mut Readable) -> FpStep {
    if rbp == 0 {
        return FpStep::End;
    }
    if rbp % 8 != 0 || rbp < rsp || rbp - rsp > MAX_FRAME_BYTES - 16 {
        return FpStep::Refused;
    }
    readable.start(rsp);
    if !readable.covers(rbp + 16) {
        return FpStep::Refused;
    }
    // SAFETY: `rbp` is 8-aligned and `[rbp, rbp + 16)` is in pages `readable` found mapped
    // (stack memory, readable: the caveat on `PROT_NONE` pages is the module docs').
    let (caller_rbp, ra) = unsafe { (*(rbp as *const usize), *((rbp + 8) as *const usize)) };
    if ra == 0 {
        return FpStep::End;
    }
    FpStep::Caller {
        ra,
        rsp: rbp + 16,
        rbp: caller_rbp,
    }
}

/// Where one step out of the frame at `rsp` (with `rbp`) by `rule` reads: the frame's CFA (the
/// caller's `rsp`; the return address is the word below it) and the slot holding the caller's
/// `rbp` (0: `rbp` is unchanged). `None` when the CFA is not sane. A function of its arguments
/// only, so a [`Memo`] may keep its answer for the same ones.
#[inline(always)]
fn locate(rule: Rule, rsp: usize, rbp: usize) -> Option<(usize, usize)> {
    let base = if rule.cfa_from_rbp { rbp } else { rsp };
    let cfa = base.wrapping_add(rule.cfa_off as isize as usize);
    if cfa % 8 != 0 || cfa < rsp + 8 || cfa - rsp > MAX_FRAME_BYTES {
        return None;
    }
    let rbp_slot = cfa.wrapping_add(rule.rbp_at as isize as usize);
    let saved = rule.rbp_at != 0 && rbp_slot >= rsp && rbp_slot < cfa;
    Some((cfa, if saved { rbp_slot } else { 0 }))
}

/// The step [`locate`] found: the return address, the caller's `rsp` and `rbp`.
///
/// # Safety
/// `cfa` and `rbp_slot` must be what `locate` gave for a frame of this thread's stack, and the
/// words below `cfa` readable (the tables describe the frame, or [`Readable`] covers it).
#[inline(always)]
unsafe fn read_step(cfa: usize, rbp_slot: usize, rbp: usize) -> (usize, usize, usize) {
    // SAFETY: `cfa - 8` and `rbp_slot` lie in `[rsp, cfa)`, the frame being left, readable by
    // the caller's promise; both 8-aligned (`locate` checks the CFA, `compute` the rule's offset).
    unsafe {
        let ra = *((cfa - 8) as *const usize);
        let next_rbp = if rbp_slot != 0 {
            *(rbp_slot as *const usize)
        } else {
            rbp
        };
        (ra, cfa, next_rbp)
    }
}

/// One step out of the frame at `rsp` (with `rbp`) by `rule`: the return address, the caller's
/// `rsp` (this frame's CFA) and `rbp`; `None` when the CFA is not sane. With `readable`, the
/// words read are checked too (after frame-pointer steps).
#[inline(always)]
fn dwarf_step(
    rule: Rule,
    rsp: usize,
    rbp: usize,
    readable: Option<&mut Readable>,
) -> Option<(usize, usize, usize)> {
    let (cfa, rbp_slot) = locate(rule, rsp, rbp)?;
    if let Some(readable) = readable {
        if !readable.covers(cfa) {
            return None;
        }
    }
    // SAFETY: `locate` placed both words in `[rsp, cfa)`, the frame being left: this thread's
    // stack, as the unwind tables describe it (and, after frame-pointer steps, as `readable`
    // found it mapped).
    Some(unsafe { read_step(cfa, rbp_slot, rbp) })
}

/// Where the step out of the frame at `rsp` (with `rbp`), executing at `lookup`, reads
/// ([`locate`]'s answer; `(0, 0)` for the outermost frame), from the memo (`hits` counts it) or
/// the rule table, remembered in the memo then; `last` becomes `lookup`'s object. `Ok(None)`:
/// the CFA is not sane, the walk ends. Inlined into [`Cfi::walk`]: it is most of a step.
#[inline(always)]
fn next_step(
    memo: Option<&MemoHold>,
    k: usize,
    lookup: usize,
    last: &mut LastObject,
    rsp: usize,
    rbp: usize,
    hits: &mut u64,
) -> Result<Option<(usize, usize)>, Miss> {
    if let Some(located) = memo.and_then(|m| m.step(k, lookup, last, rsp, rbp)) {
        *hits += 1;
        return Ok(Some(located));
    }
    object_in_walk(lookup, last)?;
    let rule = rule_in_object(lookup, last)?;
    let located = if rule.end {
        (0, 0)
    } else {
        match locate(rule, rsp, rbp) {
            Some(located) => located,
            None => return Ok(None),
        }
    };
    if let Some(m) = memo {
        let (cfa, rbp_slot) = located;
        let (object, resident) = (last.start, last.resident);
        // `locate` reads `rbp` only for a CFA computed from it.
        let rbp = if rule.cfa_from_rbp && !rule.end {
            rbp
        } else {
            ANY_RBP
        };
        m.set(
            k,
            MemoStep {
                lookup,
                object,
                resident,
                rsp,
                rbp,
                cfa,
                rbp_slot,
            },
        );
    }
    Ok(Some(located))
}

/// Where a table walk ([`Cfi::walk`]) is: the frame it steps out of next (executing at `rip`,
/// with `rsp` and `rbp`; `first` while that is the capture's own frame, whose `rip` is no return
/// address), the frames written (`n`) and skipped so far.
struct Position {
    rip: usize,
    rsp: usize,
    rbp: usize,
    first: bool,
    n: usize,
    skipped: usize,
}

impl Position {
    /// The address whose rule the next step takes: `rip`, or for a return address the call
    /// instruction's last byte (the call may be a function's last instruction).
    #[inline(always)]
    fn lookup(&self) -> usize {
        if self.first {
            self.rip
        } else {
            self.rip - 1
        }
    }

    /// Takes the step that [`locate`] (or a memo of it) gave as `located`: records the return
    /// address in `frames` (or counts it skipped, while fewer than `skip` are) and moves to the
    /// caller's frame; `Some` when the walk ends here instead (the outermost frame, or a return
    /// address 0). Inlined into both of [`Cfi::walk`]'s loops.
    ///
    /// # Safety
    /// `located` must be what `locate` gave for this frame (now or, for the same rule, `rsp` and
    /// `rbp`, in a walk before: see [`Memo`]), whose words the unwind tables describe.
    #[inline(always)]
    unsafe fn take(&mut self, located: (usize, usize), frames: &mut Frames, skip: usize) -> Option<WalkEnd> {
        let (cfa, rbp_slot) = located;
        if cfa == 0 {
            return Some(WalkEnd::Outermost);
        }
        // SAFETY: per the contract.
        let (ra, cfa, next_rbp) = unsafe { read_step(cfa, rbp_slot, self.rbp) };
        if ra == 0 {
            return Some(WalkEnd::NoReturn);
        }
        if self.skipped < skip {
            self.skipped += 1;
        } else {
            frames[self.n].write(ra);
            self.n += 1;
        }
        self.rip = ra;
        self.rsp = cfa;
        self.rbp = next_rbp;
        self.first = false;
        None
    }
}

/// What [`MemoHold::take_prefix`] did.
struct PrefixTaken {
    /// Steps taken.
    steps: usize,
    /// The prefix they came from.
    index: usize,
    /// The prefix's id and the steps taken, for the memo's last walk (0: none).
    mark: u64,
    /// No prefix applied, or the one that applied longest ran out before the walk left it:
    /// a new one may hold more.
    short: bool,
}

impl PrefixTaken {
    const NONE: PrefixTaken = PrefixTaken {
        steps: 0,
        index: 0,
        mark: 0,
        short: true,
    };
}

/// The cached-rule walker (x86-64).
#[derive(Clone, Copy, Debug, Default)]
pub struct Cfi;

impl Cfi {
    /// Walks from the frame executing at `rip` with `rsp` and `rbp` (the caller of `capture`);
    /// `None` when a frame needs libgcc. On the tables alone while they cover every frame (the
    /// common case, as fast as before mixed walks: the frame count and the registers stay in
    /// registers); at the first frame without them, [`Cfi::mixed`] takes over.
    /// With `key`, a walk on the tables alone that held a memo writes there what it knew
    /// ([`MemoHold::conclude`]).
    #[inline(always)]
    fn walk(
        frames: &mut Frames,
        skip: usize,
        rip: usize,
        rsp: usize,
        rbp: usize,
        key: Option<&mut StackKey>,
    ) -> Option<usize> {
        let mut at = Position {
            rip,
            rsp,
            rbp,
            first: true,
            n: 0,
            skipped: 0,
        };
        let mut last = LastObject::NONE;
        let memo = MemoHold::take();
        let mut step = 0;
        let mut hits = 0;
        let mut end = None;
        // The steps taken from a prefix (none while the walk skips frames).
        let mut taken = PrefixTaken::NONE;
        taken.short = skip == 0;
        // The steps the memo remembers first, in a loop of their own while they match: most walks
        // repeat the one before from start to end, and this loop keeps its registers (inlined
        // into the loop below, the rule table's path spilled them: about 48 instructions a step
        // taken from the memo, against 37 here).
        if let Some(m) = memo.as_ref() {
            if skip == 0 {
                taken = m.take_prefix(&mut at, frames, &mut last);
                (step, hits) = (taken.steps, taken.steps as u64);
                if taken.steps != 0 {
                    let before = PREFIX_HITS.load(Ordering::Relaxed);
                    PREFIX_HITS.store(before + hits, Ordering::Relaxed);
                    if at.first {
                        // The walk ended at a return address 0.
                        end = Some(WalkEnd::NoReturn);
                    }
                }
            }
            while end.is_none() && at.n < MAX_FRAMES {
                let Some(located) = m.step(step, at.lookup(), &mut last, at.rsp, at.rbp) else {
                    break;
                };
                hits += 1;
                step += 1;
                // SAFETY: the memo gave `located` for this frame (see `Memo`).
                end = unsafe { at.take(located, frames, skip) };
                if end.is_some() {
                    break;
                }
            }
        }
        while end.is_none() && at.n < MAX_FRAMES {
            let located = match next_step(
                memo.as_ref(),
                step,
                at.lookup(),
                &mut last,
                at.rsp,
                at.rbp,
                &mut hits,
            ) {
                Ok(Some(located)) => located,
                Ok(None) => {
                    end = Some(WalkEnd::Insane);
                    break;
                }
                Err(Miss::NoFrame) => {
                    drop(memo);
                    return Some(Cfi::mixed(
                        frames,
                        at.n,
                        skip - at.skipped,
                        at.rip,
                        at.rsp,
                        at.rbp,
                    ));
                }
                Err(Miss::Unsupported) => return None,
            };
            step += 1;
            // SAFETY: `locate` gave these for this frame (now or, for the same rule, `rsp` and
            // `rbp`, in a walk before: see `Memo`), whose words the unwind tables describe.
            end = unsafe { at.take(located, frames, skip) };
        }
        let end = end.unwrap_or(WalkEnd::Full);
        let n = at.n;
        if hits != 0 {
            // Counted without a locked instruction: exact while one thread walks at a time.
            MEMO_HITS.store(MEMO_HITS.load(Ordering::Relaxed) + hits, Ordering::Relaxed);
        }
        let mut made = None;
        if let (true, Some(memo)) = (taken.short, memo.as_ref()) {
            made = memo.make_prefix(rip, rsp, &taken, step, frames, n);
        }
        if let (Some(key), Some(memo)) = (key, memo.as_ref()) {
            let last_frame = match n.checked_sub(1) {
                // SAFETY: the walk wrote `frames[..n]`.
                Some(i) => unsafe { frames[i].assume_init() },
                None => 0,
            };
            *key = memo.conclude(Walked {
                steps: step,
                hits: hits as usize,
                frames: n,
                end,
                last_frame,
                prefix: taken.mark,
            });
            if let Some(mark) = made {
                memo.relabel(mark);
            }
        }
        Some(n)
    }

    /// Goes on from the frame at `rip`, a return address without unwind tables, by its frame
    /// pointer, and by the tables again wherever they cover the frame, every stack read checked
    /// (see the module docs); `frames[..n]` are found already, `skip` more are to be dropped.
    /// Returns the number of frames.
    #[cold]
    #[inline(never)]
    fn mixed(
        frames: &mut Frames,
        mut n: usize,
        mut skip: usize,
        rip: usize,
        rsp: usize,
        rbp: usize,
    ) -> usize {
        let (mut rip, mut rsp, mut rbp) = (rip, rsp, rbp);
        let mut readable = Readable::TRUSTED;
        let mut last = LastObject::NONE;
        while n < MAX_FRAMES {
            let step = match rule_in_walk(rip - 1, &mut last) {
                Ok(rule) if rule.end => break,
                Ok(rule) => dwarf_step(rule, rsp, rbp, Some(&mut readable)),
                Err(Miss::NoFrame) => match frame_pointer_step(rsp, rbp, &mut readable) {
                    FpStep::Caller { ra, rsp, rbp } => Some((ra, rsp, rbp)),
                    FpStep::End | FpStep::Refused => None,
                },
                // libgcc stops at code without tables: past one, the walk keeps what it has.
                Err(Miss::Unsupported) => None,
            };
            let Some((ra, cfa, next_rbp)) = step else {
                break;
            };
            if ra == 0 {
                break;
            }
            if skip > 0 {
                skip -= 1;
            } else {
                frames[n].write(ra);
                n += 1;
            }
            rip = ra;
            rsp = cfa;
            rbp = next_rbp;
        }
        n
    }
}

/// The registers a walk starts from, `(rip, rsp, rbp)`, in the function this is inlined into
/// (the capture itself, or a benchmark's harness for another unwinder).
#[inline(always)]
pub fn registers() -> (usize, usize, usize) {
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
    (rip, rsp, rbp)
}

impl Cfi {
    /// The capture, from the frame it is inlined into (`capture_into`'s or `capture_keyed`'s).
    #[inline(always)]
    fn capture_here(frames: &mut Frames, skip: usize, key: Option<&mut StackKey>) -> usize {
        let (rip, rsp, rbp) = registers();
        match Cfi::walk(frames, skip, rip, rsp, rbp, key) {
            Some(n) => n,
            // One more: this function's frame, which libgcc's walk sees and ours did not record.
            None => {
                FALLBACKS.fetch_add(1, Ordering::Relaxed);
                Libgcc.capture_into(frames, skip + 1)
            }
        }
    }
}

impl Unwinder for Cfi {
    #[inline(never)]
    fn capture_into(&self, frames: &mut Frames, skip: usize) -> usize {
        Cfi::capture_here(frames, skip, None)
    }

    #[inline(never)]
    fn capture_keyed(&self, frames: &mut Frames, skip: usize) -> (usize, StackKey) {
        let mut key = StackKey::NONE;
        let n = Cfi::capture_here(frames, skip, Some(&mut key));
        (n, key)
    }

    fn remember_stack(&self, key: &StackKey, table: usize, stack: u32) {
        let Some(memo) = MemoHold::take_at(key.memo as usize) else {
            return;
        };
        // SAFETY: the hold owns the memo's busy flag (the `Memo` invariant).
        let last = unsafe { &mut *memo.0.last.get() };
        if last.walk == key.walk {
            last.table = table;
            last.stack = stack;
        }
    }
}

#[cfg(test)]
mod tests {
    //! The walker's parts on inputs built here (LEB128, pointer encodings, CFA programs, a
    //! synthetic `.eh_frame_hdr`), the rule table's hits and misses, and each rule it computes
    //! for this test's own stack checked against the frame state libgcc computes for it.

    use super::*;
    use crate::unwind::{Libgcc, Unwinder};
    use core::ffi::c_int;
    use std::vec::Vec;

    fn cursor(bytes: &[u8]) -> Cursor {
        Cursor {
            p: bytes.as_ptr() as usize,
        }
    }

    fn rule(cfa_from_rbp: bool, cfa_off: i32, rbp_at: i16) -> Rule {
        Rule {
            cfa_from_rbp,
            cfa_off,
            rbp_at,
            end: false,
        }
    }

    #[test]
    fn rules_pack_and_unpack() {
        for r in [
            rule(false, 8, 0),
            rule(true, 16, -16),
            rule(false, i32::MAX, i16::MIN),
            rule(true, -8, -1),
            rule(false, 0, 0),
            Rule {
                end: true,
                ..rule(false, 0, 0)
            },
        ] {
            let packed = r.pack();
            assert_ne!(packed & VALID, 0, "{r:?} packs as valid");
            assert_eq!(Rule::unpack(packed), r);
        }
    }

    #[test]
    fn leb128_and_pointer_encodings() {
        // The DWARF standard's examples.
        for (bytes, value) in [
            (&[2u8][..], 2u64),
            (&[0x7f], 127),
            (&[0x80, 1], 128),
            (&[0x81, 1], 129),
            (&[0xb9, 0x64], 12857),
        ] {
            let mut c = cursor(bytes);
            assert_eq!(c.uleb(), value);
            assert_eq!(
                c.p,
                bytes.as_ptr() as usize + bytes.len(),
                "consumed all of {bytes:x?}"
            );
        }
        for (bytes, value) in [
            (&[2u8][..], 2i64),
            (&[0x7e], -2),
            (&[0xff, 0], 127),
            (&[0x81, 0x7f], -127),
            (&[0x80, 1], 128),
            (&[0x80, 0x7f], -128),
        ] {
            let mut c = cursor(bytes);
            assert_eq!(c.sleb(), value);
            assert_eq!(c.p, bytes.as_ptr() as usize + bytes.len());
        }
        let bytes = (-0x40i32).to_le_bytes();
        let field = bytes.as_ptr() as usize;
        // pcrel sdata4: relative to the field.
        assert_eq!(cursor(&bytes).encoded(0x1b, 0), Some(field - 0x40));
        // datarel sdata4: relative to the base given.
        assert_eq!(cursor(&bytes).encoded(0x3b, 0x1000), Some(0x1000 - 0x40));
        // absptr udata4, udata2, sdata2.
        assert_eq!(cursor(&bytes).encoded(0x03, 0), Some(0xffff_ffc0));
        assert_eq!(cursor(&bytes).encoded(0x02, 0), Some(0xffc0));
        assert_eq!(cursor(&bytes).encoded(0x0a, 0), Some(-0x40isize as usize));
        // Indirect pcrel sdata4 (a personality pointer): where the pointer is, not read.
        assert_eq!(cursor(&bytes).encoded(0x9b, 0), Some(field - 0x40));
        // Text- and function-relative, aligned, and unknown formats are not handled.
        for enc in [0x2b, 0x4b, 0x5b, 0x0f] {
            assert_eq!(cursor(&bytes).encoded(enc, 0), None, "encoding {enc:#x}");
        }
    }

    /// A CIE's initial row as GCC writes it for x86-64: CFA = rsp + 8, return address at CFA - 8.
    const CIE_PROGRAM: [u8; 5] = [0x0c, 0x07, 0x08, 0x90, 0x01];
    /// A function that pushes rbp, sets it as the frame pointer, and later restores both:
    /// at +1 CFA = rsp + 16, rbp at CFA - 16; at +4 CFA = rbp + 16; at +24 CFA = rsp + 8 and rbp
    /// restored. `remember_state` at +24 and `restore_state` at +30 return to the body's row.
    const FDE_PROGRAM: [u8; 17] = [
        0x41, 0x0e, 0x10, 0x86, 0x02, // advance 1; def_cfa_offset 16; offset rbp, 2 * -8
        0x43, 0x0d, 0x06, // advance 3; def_cfa_register rbp
        0x54, 0x0a, 0x0c, 0x07, 0x08, 0xc6, // advance 20; remember; def_cfa rsp, 8; restore rbp
        0x46, 0x0b, 0x00, // advance 6; restore_state; nop
    ];

    fn program(bytes: &[u8]) -> (usize, usize) {
        let start = bytes.as_ptr() as usize;
        (start, start + bytes.len())
    }

    /// The row for `pc` in a function at 0x1000, as a rule.
    fn row_rule(pc: usize) -> Rule {
        let start = Row {
            cfa_reg: REG_RSP,
            cfa_off: 8,
            rbp: RegRule::Unchanged,
            ra: RegRule::Unchanged,
        };
        let Ok(initial) = run(program(&CIE_PROGRAM), start, start, usize::MAX, 0, 1, -8) else {
            panic!("the CIE program runs");
        };
        let Ok(row) = run(program(&FDE_PROGRAM), initial, initial, pc, 0x1000, 1, -8) else {
            panic!("the FDE program runs at {pc:#x}");
        };
        assert!(
            row.ra == RegRule::AtCfa(-8),
            "the return address stays at CFA - 8"
        );
        let rbp_at = match row.rbp {
            RegRule::Unchanged => 0,
            RegRule::AtCfa(off) => off as i16,
            _ => panic!("rbp rule at {pc:#x}"),
        };
        rule(row.cfa_reg == REG_RBP, row.cfa_off as i32, rbp_at)
    }

    #[test]
    fn cfa_programs_give_the_row_at_each_address() {
        let body = rule(true, 16, -16);
        for (offset, want) in [
            (0, rule(false, 8, 0)),
            (1, rule(false, 16, -16)),
            (3, rule(false, 16, -16)),
            (4, body),
            (23, body),
            (24, rule(false, 8, 0)),
            (29, rule(false, 8, 0)),
            (30, body),
            (100, body),
        ] {
            assert_eq!(row_rule(0x1000 + offset), want, "at +{offset}");
        }
        // What is not interpreted is refused, not guessed: DW_CFA_def_cfa_expression, a
        // restore_state without a remember_state.
        let row = Row {
            cfa_reg: REG_RSP,
            cfa_off: 8,
            rbp: RegRule::Unchanged,
            ra: RegRule::Unchanged,
        };
        for bad in [&[0x0f, 0x01, 0x77][..], &[0x0b]] {
            let result = run(program(bad), row, row, usize::MAX, 0, 1, -8);
            assert!(matches!(result, Err(Miss::Unsupported)), "{bad:x?}");
        }
    }

    /// An object's unwind tables, laid out in memory: `.eh_frame_hdr` with a two-entry search
    /// table, then `.eh_frame` with two CIEs and their FDEs. The first FDE covers
    /// `[code, code + 64)` with [`FDE_PROGRAM`]; the second `[code + 0x1000, code + 0x1040)` with
    /// a signal-frame CIE (augmentation `zRS`). `code` is made up: nothing is executed or read
    /// there.
    struct Tables {
        bytes: Vec<u8>,
        code: usize,
    }

    impl Tables {
        fn hdr(&self) -> usize {
            self.bytes.as_ptr() as usize
        }

        fn new() -> Tables {
            let mut t = Tables {
                bytes: std::vec![0u8; 512],
                code: 0,
            };
            let base = t.hdr();
            t.code = base + 0x10_0000;
            let code = t.code;
            let mut at = 0usize;
            let put = |bytes: &mut Vec<u8>, at: &mut usize, data: &[u8]| {
                bytes[*at..*at + data.len()].copy_from_slice(data);
                *at += data.len();
            };
            let rel = |from: usize, to: usize| (to.wrapping_sub(from) as i32).to_le_bytes();
            // .eh_frame_hdr (its `.eh_frame` pointer is read and ignored).
            let (eh_frame, fdes) = (64usize, [160usize, 320]);
            put(&mut t.bytes, &mut at, &[1, 0x1b, 0x03, 0x3b]);
            put(&mut t.bytes, &mut at, &rel(base + 4, base + eh_frame));
            put(&mut t.bytes, &mut at, &2u32.to_le_bytes());
            for (i, &fde) in fdes.iter().enumerate() {
                put(&mut t.bytes, &mut at, &rel(base, code + i * 0x1000));
                put(&mut t.bytes, &mut at, &rel(base, base + fde));
            }
            // Two CIEs, then an FDE for each.
            let cies = [(eh_frame, &b"zR\0"[..]), (eh_frame + 48, &b"zRS\0"[..])];
            for &(cie, aug) in &cies {
                let mut body = std::vec![0, 0, 0, 0, 1];
                body.extend_from_slice(aug);
                body.extend_from_slice(&[1, 0x78, 16, 1, 0x1b]);
                body.extend_from_slice(&CIE_PROGRAM);
                body.resize(body.len().next_multiple_of(4), 0);
                at = cie;
                put(&mut t.bytes, &mut at, &(body.len() as u32).to_le_bytes());
                put(&mut t.bytes, &mut at, &body);
            }
            for (i, (&fde, &(cie, _))) in fdes.iter().zip(&cies).enumerate() {
                at = fde;
                let mut body = Vec::new();
                body.extend_from_slice(&((base + fde + 4 - (base + cie)) as u32).to_le_bytes());
                body.extend_from_slice(&rel(base + fde + 8, code + i * 0x1000));
                body.extend_from_slice(&64u32.to_le_bytes());
                body.push(0);
                body.extend_from_slice(&FDE_PROGRAM);
                body.resize(body.len().next_multiple_of(4), 0);
                put(&mut t.bytes, &mut at, &(body.len() as u32).to_le_bytes());
                put(&mut t.bytes, &mut at, &body);
            }
            t
        }
    }

    #[test]
    fn rules_from_a_synthetic_object() {
        let t = Tables::new();
        for offset in [0usize, 1, 4, 23, 24, 30, 63] {
            match compute(t.hdr(), t.code + offset) {
                Ok(r) => assert_eq!(r, row_rule(0x1000 + offset), "at +{offset}"),
                Err(_) => panic!("no rule at +{offset}"),
            }
        }
        // Outside every FDE: no frame. Below the first entry, and between the two FDEs.
        for pc in [t.code - 1, t.code + 64, t.code + 0xfff] {
            assert!(matches!(compute(t.hdr(), pc), Err(Miss::NoFrame)), "{pc:#x}");
        }
        // A signal frame is libgcc's business.
        assert!(matches!(
            compute(t.hdr(), t.code + 0x1000),
            Err(Miss::Unsupported)
        ));
    }

    /// [`remember`], repeated until it takes the table: it gives up when another thread is
    /// writing (other tests compute rules at the same time).
    fn remember_surely(pc: usize, object: usize, rule: Rule) {
        for _ in 0..100_000 {
            if !WRITING.load(Ordering::Acquire) {
                remember(pc, object, rule);
                if cached(pc, object) == Some(rule) {
                    return;
                }
            }
            std::thread::yield_now();
        }
        panic!("the rule for {pc:#x} never got into the table");
    }

    #[test]
    fn the_rule_table_hits_after_a_miss_and_checks_the_object() {
        // Made-up addresses: no real frame asks for them (a real one computed into their set
        // while this test runs, by another test's first walk, is a 1 in 1024 chance per
        // address that walk computes).
        let (pc, object) = (0x5eed_0000_1234usize, 0x5eed_0000_0000usize);
        let r = rule(true, 16, -16);
        assert!(
            cached(pc, object).is_none(),
            "a miss before the rule is remembered"
        );
        remember_surely(pc, object, r);
        assert_eq!(cached(pc, object), Some(r), "a hit after");
        assert!(
            cached(pc, object + 4096).is_none(),
            "an entry of another object is not used"
        );
        assert!(cached(pc + 1, object).is_none(), "nor one of another address");
        // Addresses of the same set live side by side, up to WAYS of them; one more evicts the
        // one remembered longest ago.
        let others: Vec<usize> = (pc + 1..)
            .filter(|&p| core::ptr::eq(set_of(p), set_of(pc)))
            .take(WAYS)
            .collect();
        for (i, &other) in others.iter().enumerate() {
            remember_surely(other, object, rule(false, 8 * i as i32, 0));
            assert_eq!(cached(other, object), Some(rule(false, 8 * i as i32, 0)));
            if i + 1 < WAYS {
                assert_eq!(cached(pc, object), Some(r), "{} others in its set", i + 1);
            }
        }
        assert!(cached(pc, object).is_none(), "evicted by the {WAYS}th");
        for (i, &other) in others.iter().enumerate().skip(1) {
            assert_eq!(cached(other, object), Some(rule(false, 8 * i as i32, 0)));
        }
        // Remembering an address again does not take a second entry.
        remember_surely(others[1], object, rule(true, 24, -16));
        assert_eq!(cached(others[1], object), Some(rule(true, 24, -16)));
        for (i, &other) in others.iter().enumerate().skip(2) {
            assert_eq!(cached(other, object), Some(rule(false, 8 * i as i32, 0)));
        }

        // A real address (inside a prologue, so no walk asks for it): its rule comes from the
        // table when there is an entry (a planted wrong one comes back), and is computed from the
        // object's tables when there is none (after the entry is evicted).
        let lookup = cfa_of_frames as *const () as usize + 1;
        let obj = tally_pal::process::loaded_object(lookup).expect("this test's own code is loaded");
        let object = obj.start;
        let Ok(computed) = compute(obj.eh_frame, lookup) else {
            panic!("no rule for this test's own code")
        };
        assert!(matches!(rule_for(lookup), Ok(r) if r == computed));
        let planted = rule(true, 1234, -8);
        remember_surely(lookup, object, planted);
        assert!(
            matches!(rule_for(lookup), Ok(r) if r == planted),
            "a hit reads the table"
        );
        for evict in (lookup + 1..)
            .filter(|&p| core::ptr::eq(set_of(p), set_of(lookup)))
            .take(WAYS)
        {
            remember_surely(evict, object, computed);
        }
        assert!(
            matches!(rule_for(lookup), Ok(r) if r == computed),
            "a miss computes the rule"
        );
    }

    #[allow(non_camel_case_types)]
    #[repr(C)]
    struct _Unwind_Context {
        _opaque: [u8; 0],
    }

    type TraceFn = extern "C" fn(*mut _Unwind_Context, *mut c_void) -> c_int;
    type BacktraceFn = unsafe extern "C" fn(TraceFn, *mut c_void) -> c_int;
    type GetIpFn = unsafe extern "C" fn(*mut _Unwind_Context) -> usize;

    #[link(name = "gcc_s")]
    extern "C" {
        fn _Unwind_GetCFA(ctx: *mut _Unwind_Context) -> usize;
        fn _Unwind_GetGR(ctx: *mut _Unwind_Context, index: c_int) -> usize;
    }

    /// A libgcc function `unwind.rs` declares with its own context type: looked up at run
    /// time, so that the two declarations do not clash.
    fn libgcc_function(name: &core::ffi::CStr) -> *mut c_void {
        // SAFETY: a symbol lookup in the loaded objects, with a NUL-terminated name.
        let f = unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) };
        assert!(!f.is_null(), "{name:?} not found");
        f
    }

    /// What libgcc knows about one frame: its return address, its `rsp` (what libgcc calls the
    /// CFA of the context: the callee's CFA) and its `rbp`.
    #[derive(Clone, Copy, Debug, Default)]
    struct FrameState {
        ip: usize,
        cfa: usize,
        rbp: usize,
    }

    /// The walk's state: what was found so far, and libgcc's `_Unwind_GetIP`.
    struct Walk {
        frames: Vec<FrameState>,
        get_ip: GetIpFn,
    }

    extern "C" fn record(ctx: *mut _Unwind_Context, arg: *mut c_void) -> c_int {
        // SAFETY: `arg` is the `Walk` that `cfa_of_frames` passes and keeps alive for the walk.
        let walk = unsafe { &mut *arg.cast::<Walk>() };
        // SAFETY: `ctx` is the context libgcc hands to this callback; rbp (DWARF register 6) is
        // callee-saved, so libgcc tracks it in every frame.
        let state = unsafe {
            FrameState {
                ip: (walk.get_ip)(ctx),
                cfa: _Unwind_GetCFA(ctx),
                rbp: _Unwind_GetGR(ctx, REG_RBP as c_int),
            }
        };
        if walk.frames.len() == walk.frames.capacity() || state.ip == 0 {
            return 4; // _URC_NORMAL_STOP
        }
        walk.frames.push(state);
        0
    }

    /// libgcc's view of the calling thread's frames, innermost first.
    #[inline(never)]
    fn cfa_of_frames() -> Vec<FrameState> {
        // SAFETY: `_Unwind_Backtrace` and `_Unwind_GetIP` have these signatures in libgcc.
        let (backtrace, get_ip) = unsafe {
            (
                core::mem::transmute::<*mut c_void, BacktraceFn>(libgcc_function(c"_Unwind_Backtrace")),
                core::mem::transmute::<*mut c_void, GetIpFn>(libgcc_function(c"_Unwind_GetIP")),
            )
        };
        let mut walk = Walk {
            frames: Vec::with_capacity(MAX_FRAMES),
            get_ip,
        };
        // SAFETY: `record` only pushes into `walk.frames` (within its capacity), and `walk`
        // outlives the walk.
        unsafe { backtrace(record, (&mut walk as *mut Walk).cast()) };
        walk.frames
    }

    #[inline(never)]
    fn recurse(depth: usize, at_bottom: &mut dyn FnMut()) {
        if depth == 0 {
            at_bottom();
        } else {
            recurse(depth - 1, at_bottom);
        }
        core::hint::black_box(depth);
    }

    /// For every frame of a known stack (a 12-deep recursion under the test harness), the rule
    /// computed for its return address gives the CFA and the caller's `rbp` that libgcc found;
    /// and a whole capture returns libgcc's frames.
    #[test]
    fn rules_agree_with_libgcc_frame_by_frame() {
        let mut frames = Vec::new();
        recurse(12, &mut || frames = cfa_of_frames());
        assert!(frames.len() > 14, "libgcc found only {} frames", frames.len());
        let mut checked = 0;
        // libgcc's CFA of a context is the one of the frame below it (the frame it returns
        // from), which is also the context's own rsp: frame i's CFA is frame i + 1's value.
        for i in 0..frames.len() - 1 {
            let (frame, caller) = (frames[i], frames[i + 1]);
            let r = match rule_for(frame.ip - 1) {
                Ok(r) => r,
                Err(Miss::NoFrame) => break,
                Err(Miss::Unsupported) => panic!("frame {i} at {:#x} needs libgcc", frame.ip),
            };
            if r.end {
                break;
            }
            let base = if r.cfa_from_rbp { frame.rbp } else { frame.cfa };
            let cfa = base.wrapping_add(r.cfa_off as isize as usize);
            assert_eq!(cfa, caller.cfa, "frame {i} at {:#x}: {r:?}", frame.ip);
            let rbp = if r.rbp_at == 0 {
                frame.rbp
            } else {
                // SAFETY: the slot lies in frame i, which is live below this test's frame.
                unsafe { *(cfa.wrapping_add(r.rbp_at as isize as usize) as *const usize) }
            };
            assert_eq!(
                rbp, caller.rbp,
                "frame {i} at {:#x}: the caller's rbp, {r:?}",
                frame.ip
            );
            checked += 1;
        }
        assert!(checked >= 12, "only {checked} frames checked");

        let (mut ours, mut theirs) = ([0usize; MAX_FRAMES], [0usize; MAX_FRAMES]);
        let (mut n_ours, mut n_theirs) = (0, 0);
        recurse(12, &mut || {
            n_ours = Cfi.capture(&mut ours, 0);
            n_theirs = Libgcc.capture(&mut theirs, 0);
        });
        assert!(n_ours > 12);
        // The first frame is the closure's two call sites; the callers agree to the end.
        assert_eq!(&ours[1..n_ours], &theirs[1..n_theirs]);
    }

    /// A fake stack in memory this test owns: word `i` at `base + 8 * i`.
    struct FakeStack {
        words: Vec<usize>,
    }

    impl FakeStack {
        fn new() -> FakeStack {
            FakeStack {
                words: std::vec![0usize; 1024],
            }
        }
        fn at(&self, i: usize) -> usize {
            self.words.as_ptr() as usize + 8 * i
        }
        /// A frame record at word `i`: the caller's rbp, then the return address.
        fn record(&mut self, i: usize, caller_rbp: usize, ra: usize) {
            self.words[i] = caller_rbp;
            self.words[i + 1] = ra;
        }
    }

    #[test]
    fn frame_pointer_steps_follow_a_valid_chain() {
        let mut stack = FakeStack::new();
        // Three frames: records at words 10, 40 and 500; the last is the outermost (rbp 0).
        stack.record(10, stack.at(40), 0x1111);
        stack.record(40, stack.at(500), 0x2222);
        stack.record(500, 0, 0x3333);
        let mut readable = Readable {
            to: stack.at(0),
            hint: 0,
            ahead: AHEAD,
        };
        let (mut rsp, mut rbp) = (stack.at(0), stack.at(10));
        let mut found = Vec::new();
        loop {
            match frame_pointer_step(rsp, rbp, &mut readable) {
                FpStep::Caller { ra, rsp: r, rbp: b } => {
                    assert!(r > rsp, "climbs");
                    found.push(ra);
                    (rsp, rbp) = (r, b);
                }
                FpStep::End => break,
                FpStep::Refused => panic!("refused at {rbp:#x} after {found:x?}"),
            }
        }
        assert_eq!(found, [0x1111, 0x2222, 0x3333]);
        assert_eq!(rsp, stack.at(502), "the outermost frame's rsp");
        assert!(readable.to >= stack.at(502), "the pages read are known mapped");
        // A record may start right at the frame's rsp; a null return address ends the stack.
        stack.record(12, stack.at(40), 0);
        let mut readable = Readable {
            to: stack.at(0),
            hint: 0,
            ahead: AHEAD,
        };
        assert_eq!(
            frame_pointer_step(stack.at(10), stack.at(10), &mut readable),
            FpStep::Caller {
                ra: 0x1111,
                rsp: stack.at(12),
                rbp: stack.at(40)
            }
        );
        assert_eq!(
            frame_pointer_step(stack.at(12), stack.at(12), &mut readable),
            FpStep::End
        );
    }

    #[test]
    fn frame_pointer_steps_refuse_what_cannot_be_a_frame() {
        let mut stack = FakeStack::new();
        stack.record(10, stack.at(40), 0x1111);
        let rsp = stack.at(4);
        let step = |rbp: usize| {
            frame_pointer_step(
                rsp,
                rbp,
                &mut Readable {
                    to: stack.at(0),
                    hint: 0,
                    ahead: AHEAD,
                },
            )
        };
        assert!(matches!(step(stack.at(10)), FpStep::Caller { .. }));
        // Below the frame's rsp: not climbing.
        assert_eq!(step(stack.at(2)), FpStep::Refused);
        assert_eq!(step(rsp - 8), FpStep::Refused);
        // Misaligned.
        for off in [1, 4, 7] {
            assert_eq!(step(stack.at(10) + off), FpStep::Refused, "+{off}");
        }
        // A step larger than MAX_FRAME_BYTES (never read: far past this fake stack).
        assert_eq!(step(rsp + MAX_FRAME_BYTES), FpStep::Refused);
        assert_eq!(step(usize::MAX - 7), FpStep::Refused);

        // Out of the stack: a record whose second word is on an unmapped page. Two pages mapped,
        // the second given back (again if another test's mapping took its place at once).
        let page = tally_pal::PAGE;
        let mut tries = 0;
        let base = loop {
            let p = tally_pal::map(2 * page) as usize;
            assert_ne!(p, 0);
            // SAFETY: the second page of the mapping just made.
            unsafe { tally_pal::unmap((p + page) as *mut u8, page) };
            if !tally_pal::memory::page_is_mapped(p + page) {
                break p;
            }
            tries += 1;
            assert!(tries < 10, "no hole above a mapping");
        };
        let top = base + page;
        // SAFETY: the last two words of the mapped page.
        unsafe {
            *((top - 16) as *mut usize) = 0;
            *((top - 8) as *mut usize) = 0x4444;
        }
        let mut readable = Readable {
            to: base,
            hint: 0,
            ahead: AHEAD,
        };
        assert_eq!(
            frame_pointer_step(base, top - 8, &mut readable),
            FpStep::Refused,
            "the record's return address is past the mapping"
        );
        assert_eq!(readable.to, base, "nothing learnt from a refusal");
        assert_eq!(readable.ahead, 0, "but that the stack ends within AHEAD");
        assert_eq!(
            frame_pointer_step(base, top - 16, &mut readable),
            FpStep::Caller {
                ra: 0x4444,
                rsp: top,
                rbp: 0
            },
            "the last record inside it is read"
        );
        assert_eq!(readable.to, top);
        // SAFETY: the first page, still mapped.
        unsafe { tally_pal::unmap(base as *mut u8, page) };
    }

    #[test]
    fn readable_trusts_the_tables_until_started() {
        let mut readable = Readable::TRUSTED;
        assert!(readable.covers(usize::MAX), "DWARF steps are not checked");
        let stack = FakeStack::new();
        readable.start(stack.at(1));
        assert_eq!(readable.to, stack.at(1).next_multiple_of(tally_pal::PAGE));
        readable.start(stack.at(900));
        assert_eq!(
            readable.to,
            stack.at(1).next_multiple_of(tally_pal::PAGE),
            "started once"
        );
        assert!(readable.covers(stack.at(1000)));
        assert!(
            !readable.covers(usize::MAX - 4096),
            "the top of the address space"
        );
    }

    #[test]
    fn the_stack_end_hint_is_above_this_stack_and_mapped() {
        let check = || {
            let marker = 0u8;
            let here = core::hint::black_box(&marker) as *const u8 as usize;
            let end = stack_end_hint(here);
            assert!(end > here, "{end:#x} is not above {here:#x}");
            assert!(tally_pal::memory::range_is_mapped(here, end));
            assert_eq!(stack_end_hint(1 << 16), 0, "far below every stack");
        };
        check();
        std::thread::spawn(check).join().unwrap();
    }

    /// A hand-made function in anonymous memory, with no unwind tables, that keeps a frame
    /// pointer: `fn(target: extern "C" fn(*mut c_void), arg: *mut c_void)` calls `target(arg)`
    /// with `rbp` set by `set_rbp` (`mov rbp, rsp` for a proper frame).
    struct Trampoline {
        code: usize,
        /// The offset of its return address (after `call rax`).
        ret: usize,
    }

    type Target = extern "C" fn(*mut c_void);
    type TrampolineFn = extern "C" fn(Target, *mut c_void);

    const MOV_RBP_RSP: &[u8] = &[0x48, 0x89, 0xe5];

    impl Trampoline {
        /// `push rbp; <set_rbp>; [call next (same arguments) | mov rax, rdi; mov rdi, rsi;
        /// call rax]; pop rbp; ret`: with `next`, it calls that function instead of the target.
        fn new(set_rbp: &[u8], next: Option<usize>) -> Trampoline {
            let mut code = std::vec![0x55u8];
            code.extend_from_slice(set_rbp);
            match next {
                Some(f) => {
                    code.extend_from_slice(&[0x48, 0xb8]); // movabs rax, f
                    code.extend_from_slice(&f.to_le_bytes());
                }
                None => code.extend_from_slice(&[0x48, 0x89, 0xf8, 0x48, 0x89, 0xf7]),
            }
            code.extend_from_slice(&[0xff, 0xd0]); // call rax
            let ret = code.len();
            code.extend_from_slice(&[0x5d, 0xc3]);
            let page = tally_pal::map(tally_pal::PAGE);
            assert!(!page.is_null());
            // SAFETY: a fresh page of ours: the code is copied in, then it is made executable
            // and read-only.
            unsafe {
                core::ptr::copy_nonoverlapping(code.as_ptr(), page, code.len());
                assert_eq!(
                    libc::mprotect(page.cast(), tally_pal::PAGE, libc::PROT_READ | libc::PROT_EXEC),
                    0
                );
            }
            Trampoline {
                code: page as usize,
                ret,
            }
        }

        fn return_address(&self) -> usize {
            self.code + self.ret
        }

        fn call(&self, target: Target, arg: *mut c_void) {
            // SAFETY: the code is a function of this signature (System V: target in rdi, arg in
            // rsi), which keeps the callee-saved registers and the stack's alignment.
            let f = unsafe { core::mem::transmute::<usize, TrampolineFn>(self.code) };
            f(target, arg);
        }
    }

    struct Capture {
        /// Frames for `Cfi` to skip.
        skip: usize,
        frames: [usize; MAX_FRAMES],
        n: usize,
        libgcc: [usize; MAX_FRAMES],
        n_libgcc: usize,
    }

    impl Capture {
        fn new(skip: usize) -> Capture {
            Capture {
                skip,
                frames: [0; MAX_FRAMES],
                n: 0,
                libgcc: [0; MAX_FRAMES],
                n_libgcc: 0,
            }
        }
    }

    /// The callee on the far side of the trampolines: captures its stack with both walkers.
    #[inline(never)]
    extern "C" fn capture_here(arg: *mut c_void) {
        // SAFETY: `arg` is the `Capture` that `through` passes, alive for the call.
        let capture = unsafe { &mut *arg.cast::<Capture>() };
        capture.n = Cfi.capture(&mut capture.frames, capture.skip);
        capture.n_libgcc = Libgcc.capture(&mut capture.libgcc, 0);
    }

    /// Captures from `capture_here` called through `trampoline` (`Cfi` skipping `skip` frames),
    /// then called directly.
    #[inline(never)]
    fn through(trampoline: &Trampoline, skip: usize) -> (Capture, Capture) {
        let (mut via, mut direct) = (Capture::new(skip), Capture::new(0));
        trampoline.call(capture_here, (&mut via as *mut Capture).cast());
        capture_here(core::hint::black_box(&mut direct as *mut Capture).cast());
        (via, direct)
    }

    /// The mixed walk on a real stack: test harness → `through` → a frame without unwind tables
    /// (one, or two nested) → `capture_here` → capture. The walk crosses the hand-made frames by
    /// frame pointer and goes back to the tables in `through`: above the trampolines it finds
    /// exactly the frames a capture from `through` itself finds, to the end of the stack, where
    /// libgcc stops at the first trampoline.
    #[test]
    fn the_walk_crosses_code_without_unwind_tables_by_frame_pointers() {
        let inner = Trampoline::new(MOV_RBP_RSP, None);
        let outer = Trampoline::new(MOV_RBP_RSP, Some(inner.code));
        let fallbacks = FALLBACKS.load(Ordering::Relaxed);
        for (trampolines, entry) in [(&[&inner][..], &inner), (&[&inner, &outer], &outer)] {
            let k = trampolines.len();
            // Twice, then skipping all the frames up to `through` (the last of them found by
            // frame pointer), from the same call site.
            let mut skipping = Vec::new();
            for (round, skip) in [0, 0, 2 + k].into_iter().enumerate() {
                let (via, direct) = through(entry, skip);
                if skip > 0 {
                    skipping.push(via);
                    continue;
                }
                let via_frames = &via.frames[..via.n];
                let direct_frames = &direct.frames[..direct.n];
                assert!(direct.n > 5, "round {round}: {direct_frames:x?}");
                for (i, t) in trampolines.iter().enumerate() {
                    assert_eq!(
                        via.frames[1 + i],
                        t.return_address(),
                        "{k} trampolines round {round}: {via_frames:x?}"
                    );
                }
                // Past the trampolines: the caller `through` (another call site of it), then
                // the same callers as the direct capture's.
                let here = through as fn(&Trampoline, usize) -> (Capture, Capture) as usize;
                assert!(via.frames[1 + k] > here && via.frames[1 + k] < here + 4096);
                assert_eq!(via.n, direct.n + k, "{via_frames:x?} vs {direct_frames:x?}");
                assert_eq!(&via_frames[2 + k..], &direct_frames[2..]);
                // libgcc ends the stack at the first trampoline, after the same frames.
                assert_eq!(via.n_libgcc, 2, "{:x?}", &via.libgcc[..via.n_libgcc]);
                assert_eq!(via.libgcc[1], via.frames[1]);
                if round == 1 {
                    skipping.push(via);
                }
            }
            let (whole, skipped) = (&skipping[0], &skipping[1]);
            assert_eq!(
                &skipped.frames[..skipped.n],
                &whole.frames[2 + k..whole.n],
                "{k} trampolines, skipping {}",
                2 + k
            );
        }
        assert_eq!(
            FALLBACKS.load(Ordering::Relaxed),
            fallbacks,
            "all of it without libgcc"
        );
    }

    /// Frame pointers that cannot be the trampoline's frame end the walk cleanly after its
    /// return address: zero (the end of the stack), below its stack pointer, misaligned, too far.
    #[test]
    fn the_walk_stops_at_a_garbage_frame_pointer() {
        let cases: [(&str, &[u8]); 4] = [
            ("xor rbp, rbp", &[0x48, 0x31, 0xed]),
            ("lea rbp, [rsp - 16]", &[0x48, 0x8d, 0x6c, 0x24, 0xf0]),
            ("lea rbp, [rsp + 4]", &[0x48, 0x8d, 0x6c, 0x24, 0x04]),
            (
                "lea rbp, [rsp + 2 MiB]",
                &[0x48, 0x8d, 0xac, 0x24, 0x00, 0x00, 0x20, 0x00],
            ),
        ];
        for (name, set_rbp) in cases {
            let trampoline = Trampoline::new(set_rbp, None);
            let (via, _) = through(&trampoline, 0);
            assert_eq!(via.n, 2, "{name}: {:x?}", &via.frames[..via.n]);
            assert_eq!(via.frames[1], trampoline.return_address(), "{name}");
        }
    }
}
