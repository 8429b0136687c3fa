//! `mallctl`: jemalloc's tree of named settings and statistics, filled from Tally's own state.
//!
//! A name is dot-separated (`stats.arenas.4096.bins.3.curregs`); some components are numbers (an
//! arena, a size class). `TREE` holds every name Tally answers: inner nodes by name, numbered
//! nodes with a check of the number, and leaves that read or act. A MIB (`mallctlnametomib`) is
//! the path through the tree: per component, a named child's position among its siblings or the
//! number itself, so a program may look a name up once and change a number in the MIB.
//!
//! Reads and writes follow jemalloc's rules (`ctl.c`'s `READ`, `WRITE`, `READONLY`, ...):
//! - an unknown name, a number out of range, or a name Tally cannot honour: `ENOENT`;
//! - `*oldlenp` not the value's size: as much as fits is copied, `*oldlenp` set to that, `EINVAL`;
//!   `newlen` not the value's size: `EINVAL`;
//! - writing a read-only name, reading a write-only one, or either on an action: `EPERM`;
//! - a read-write name hands back the value it had before the write.
//!
//! `stats.*` figures come from a snapshot taken when `epoch` is written (and at the first read),
//! as jemalloc's do, so figures read after one `epoch` write agree with each other. Everything
//! else is read when asked.
//!
//! Nothing here allocates: names are parsed in place, the snapshot lives in `.bss`, and strings
//! handed out (`version`, `opt.prof_prefix`) are static.

use core::cell::UnsafeCell;
use core::ffi::{c_char, c_void, CStr};
use core::sync::atomic::{AtomicBool, Ordering};

use tally_pal::sync::{Mutex, Rank};
use tally_pal::{self as pal, PAGE};
use tally_profiler::PROFILER;

use crate::arena::{self, ARENAS};
use crate::decay;
use crate::extent::{DIRTY_DECAY_MS, MUZZY_DECAY_MS};
use crate::init::{ensure_global, options};
use crate::options::Thp;
use crate::prof_hooks;
use crate::size_class::{SizeClass, NCACHED, NCLASSES, NSMALL};
use crate::stats::{self, Stats};
use crate::thread;

/// jemalloc's `MALLCTL_ARENAS_ALL`: the index naming all arenas at once.
pub const ARENAS_ALL: usize = 4096;

/// Components a name has at most (`stats.arenas.<i>.bins.<j>.curregs` has 6).
pub const MAX_DEPTH: usize = 8;

/// Numbers a name has at most (`stats.arenas.<i>.bins.<j>`).
const MAX_NUMBERS: usize = 2;

/// Errors, as `mallctl` returns them (`errno` values).
const ENOENT: i32 = libc::ENOENT;
const EINVAL: i32 = libc::EINVAL;
const EPERM: i32 = libc::EPERM;
const EFAULT: i32 = libc::EFAULT;
const EAGAIN: i32 = libc::EAGAIN;

/// The C type of a value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ty {
    /// `bool` (one byte).
    Bool,
    /// `unsigned` (four bytes).
    Unsigned,
    /// `size_t`.
    Size,
    /// `ssize_t`.
    SSize,
    /// `uint64_t`.
    U64,
    /// `const char *`.
    Str,
}

impl Ty {
    /// The value's size in bytes, what `*oldlenp` and `newlen` must be.
    pub const fn size(self) -> usize {
        match self {
            Ty::Bool => 1,
            Ty::Unsigned => 4,
            Ty::Size | Ty::SSize | Ty::U64 | Ty::Str => 8,
        }
    }
}

/// A value read or written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Value {
    /// `bool`.
    Bool(bool),
    /// `unsigned`.
    Unsigned(u32),
    /// `size_t`.
    Size(usize),
    /// `ssize_t`.
    SSize(isize),
    /// `uint64_t`.
    U64(u64),
    /// `const char *`, a static C string.
    Str(&'static CStr),
}

impl Value {
    fn ty(self) -> Ty {
        match self {
            Value::Bool(_) => Ty::Bool,
            Value::Unsigned(_) => Ty::Unsigned,
            Value::Size(_) => Ty::Size,
            Value::SSize(_) => Ty::SSize,
            Value::U64(_) => Ty::U64,
            Value::Str(_) => Ty::Str,
        }
    }

    /// The value's bytes as C holds it (the first `ty().size()`).
    fn bytes(self) -> [u8; 8] {
        let mut b = [0u8; 8];
        match self {
            Value::Bool(v) => b[0] = v as u8,
            Value::Unsigned(v) => b[..4].copy_from_slice(&v.to_ne_bytes()),
            Value::Size(v) => b = v.to_ne_bytes(),
            Value::SSize(v) => b = v.to_ne_bytes(),
            Value::U64(v) => b = v.to_ne_bytes(),
            Value::Str(s) => b = (s.as_ptr() as usize).to_ne_bytes(),
        }
        b
    }
}

/// A value written, as the caller's bytes say (a `const char *` stays a pointer: only the leaf
/// that takes one knows how to read it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NewValue {
    /// `bool`: any non-zero byte is true.
    Bool(bool),
    /// `unsigned`.
    Unsigned(u32),
    /// `size_t`.
    Size(usize),
    /// `ssize_t`.
    SSize(isize),
    /// `uint64_t`.
    U64(u64),
    /// `const char *` (may be null).
    Str(*const c_char),
}

/// One `mallctl` call's buffers.
///
/// Invariant: when `oldp` and `oldlenp` are both non-null, `oldlenp` is valid to read and write
/// and `oldp` valid to write `*oldlenp` bytes; when `newp` is non-null it is valid to read
/// `newlen` bytes. (The C caller's contract, checked by [`Call::new`]'s caller.)
pub struct Call {
    oldp: *mut c_void,
    oldlenp: *mut usize,
    newp: *const c_void,
    newlen: usize,
}

impl Call {
    /// The buffers of a call.
    ///
    /// # Safety
    /// The pointers must keep the type's invariant for the call's duration.
    pub unsafe fn new(oldp: *mut c_void, oldlenp: *mut usize, newp: *const c_void, newlen: usize) -> Call {
        Call {
            oldp,
            oldlenp,
            newp,
            newlen,
        }
    }

    fn wants_old(&self) -> bool {
        !self.oldp.is_null() && !self.oldlenp.is_null()
    }

    /// jemalloc's `READONLY()`.
    fn read_only(&self) -> Result<(), i32> {
        if !self.newp.is_null() || self.newlen != 0 {
            return Err(EPERM);
        }
        Ok(())
    }

    /// jemalloc's `WRITEONLY()`.
    fn write_only(&self) -> Result<(), i32> {
        if !self.oldp.is_null() || !self.oldlenp.is_null() {
            return Err(EPERM);
        }
        Ok(())
    }

    /// jemalloc's `NEITHER_READ_NOR_WRITE()`.
    fn neither(&self) -> Result<(), i32> {
        self.read_only()?;
        self.write_only()
    }

    /// The value written, if any, read as `ty` (jemalloc's `WRITE`): `EINVAL` when `newlen` is
    /// not its size.
    fn new_value(&self, ty: Ty) -> Result<Option<NewValue>, i32> {
        if self.newp.is_null() {
            return Ok(None);
        }
        if self.newlen != ty.size() {
            return Err(EINVAL);
        }
        let mut b = [0u8; 8];
        // SAFETY: `newp` is valid to read `newlen` bytes (invariant), which is `ty.size() <= 8`.
        unsafe { core::ptr::copy_nonoverlapping(self.newp.cast::<u8>(), b.as_mut_ptr(), ty.size()) };
        let word = u64::from_ne_bytes(b);
        Ok(Some(match ty {
            Ty::Bool => NewValue::Bool(b[0] != 0),
            Ty::Unsigned => NewValue::Unsigned(u32::from_ne_bytes([b[0], b[1], b[2], b[3]])),
            Ty::Size => NewValue::Size(word as usize),
            Ty::SSize => NewValue::SSize(word as isize),
            Ty::U64 => NewValue::U64(word),
            Ty::Str => NewValue::Str(word as usize as *const c_char),
        }))
    }

    /// Hands `v` to the caller (jemalloc's `READ`): nothing when no buffer was given; when
    /// `*oldlenp` is not the value's size, what fits and `EINVAL`.
    fn give(&self, v: Value) -> Result<(), i32> {
        if !self.wants_old() {
            return Ok(());
        }
        let size = v.ty().size();
        let bytes = v.bytes();
        // SAFETY: both pointers non-null, so valid per the invariant; at most `*oldlenp` bytes
        // are written to `oldp`.
        unsafe {
            let room = *self.oldlenp;
            let n = size.min(room);
            core::ptr::copy_nonoverlapping(bytes.as_ptr(), self.oldp.cast::<u8>(), n);
            if room != size {
                *self.oldlenp = n;
                return Err(EINVAL);
            }
        }
        Ok(())
    }
}

/// The numbers met on the way to a leaf, in order.
#[derive(Clone, Copy, Debug, Default)]
pub struct Numbers([usize; MAX_NUMBERS]);

/// What a leaf does.
#[derive(Clone, Copy)]
enum Leaf {
    /// A read-only value; `None` means the name does not exist for these numbers (`ENOENT`).
    Get(fn(&Numbers) -> Option<Value>),
    /// Anything else: reads, writes and checks the call itself.
    Run(fn(&Call, &Numbers) -> Result<(), i32>),
}

/// A node of the tree.
#[derive(Clone, Copy)]
enum Node {
    /// Children by name.
    Named(&'static [(&'static str, Node)]),
    /// One child for every number the check admits.
    Numbered(fn(usize) -> bool, &'static Node),
    Leaf(Leaf),
}

/// Where a lookup ended: a leaf and the numbers on its path.
struct Found {
    leaf: Leaf,
    numbers: Numbers,
}

/// Walks `name` down the tree; writes the MIB of the first `mib.len()` components (all of them
/// when `mib` is longer) and returns the number of components and the leaf, if the name ends at
/// one. `Err(ENOENT)` for a name not in the tree.
fn walk_name(name: &[u8], mib: &mut [usize]) -> Result<(usize, Option<Found>), i32> {
    let mut node = &TREE;
    let mut numbers = Numbers::default();
    let mut counted = 0;
    let mut depth = 0;
    for part in name.split(|&b| b == b'.') {
        let (index, next) = step_by_name(node, part, &mut numbers, &mut counted).ok_or(ENOENT)?;
        if depth < mib.len() {
            mib[depth] = index;
        }
        depth += 1;
        node = next;
        if depth > MAX_DEPTH {
            return Err(ENOENT);
        }
    }
    let found = match node {
        Node::Leaf(leaf) => Some(Found { leaf: *leaf, numbers }),
        _ => None,
    };
    Ok((depth, found))
}

/// One component by name: the child and its MIB entry.
fn step_by_name(
    node: &'static Node,
    part: &[u8],
    numbers: &mut Numbers,
    counted: &mut usize,
) -> Option<(usize, &'static Node)> {
    match node {
        Node::Named(children) => children
            .iter()
            .position(|(name, _)| name.as_bytes() == part)
            .map(|i| (i, &children[i].1)),
        Node::Numbered(check, child) => {
            let n = parse_number(part)?;
            if !check(n) || *counted == MAX_NUMBERS {
                return None;
            }
            numbers.0[*counted] = n;
            *counted += 1;
            Some((n, *child))
        }
        Node::Leaf(_) => None,
    }
}

/// A decimal number of at most 19 digits, nothing else.
fn parse_number(part: &[u8]) -> Option<usize> {
    if part.is_empty() || part.len() > 19 || !part.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(part.iter().fold(0usize, |n, &d| n * 10 + (d - b'0') as usize))
}

/// Walks a MIB down the tree to its leaf.
fn walk_mib(mib: &[usize]) -> Result<Found, i32> {
    let mut node = &TREE;
    let mut numbers = Numbers::default();
    let mut counted = 0;
    for &m in mib {
        node = match node {
            Node::Named(children) => &children.get(m).ok_or(ENOENT)?.1,
            Node::Numbered(check, child) => {
                if !check(m) || counted == MAX_NUMBERS {
                    return Err(ENOENT);
                }
                numbers.0[counted] = m;
                counted += 1;
                child
            }
            Node::Leaf(_) => return Err(ENOENT),
        };
    }
    match node {
        Node::Leaf(leaf) => Ok(Found { leaf: *leaf, numbers }),
        _ => Err(ENOENT),
    }
}

fn run(found: Found, call: &Call) -> Result<(), i32> {
    match found.leaf {
        Leaf::Get(get) => {
            call.read_only()?;
            let v = get(&found.numbers).ok_or(ENOENT)?;
            call.give(v)
        }
        Leaf::Run(f) => f(call, &found.numbers),
    }
}

fn errno_of(r: Result<(), i32>) -> i32 {
    r.err().unwrap_or(0)
}

/// `mallctl(name, oldp, oldlenp, newp, newlen)`: 0 or an `errno` value.
pub fn by_name(name: &[u8], call: &Call) -> i32 {
    ensure_global();
    errno_of(match walk_name(name, &mut []) {
        Ok((_, Some(found))) => run(found, call),
        Ok((_, None)) => Err(ENOENT),
        Err(e) => Err(e),
    })
}

/// `mallctlnametomib(name, mibp, miblenp)`: fills `mib` (as long as `*miblenp`) with the path of
/// `name`, or of its first `mib.len()` components, and returns the entries written; a name that
/// stops at an inner node is `ENOENT`, as in jemalloc.
pub fn name_to_mib(name: &[u8], mib: &mut [usize]) -> Result<usize, i32> {
    ensure_global();
    let (depth, found) = walk_name(name, mib)?;
    if found.is_none() {
        return Err(ENOENT);
    }
    Ok(depth.min(mib.len()))
}

/// `mallctlbymib(mib, miblen, oldp, oldlenp, newp, newlen)`.
pub fn by_mib(mib: &[usize], call: &Call) -> i32 {
    ensure_global();
    errno_of(walk_mib(mib).and_then(|found| run(found, call)))
}

// ---------------------------------------------------------------------------------------------
// The statistics snapshot.

/// The snapshot `stats.*` reads.
///
/// Invariant: touched only by the holder of [`EPOCH`] (which counts refreshes; 0: none yet).
struct Snapshot(UnsafeCell<Stats>);
// SAFETY: see the invariant: access is serialized by EPOCH's lock.
unsafe impl Sync for Snapshot {}
static SNAPSHOT: Snapshot = Snapshot(UnsafeCell::new(Stats::ZERO));
static EPOCH: Mutex<u64> = Mutex::new(Rank::Ctl, 0);
static FORK_HANDLERS: AtomicBool = AtomicBool::new(false);

/// Takes a new snapshot; returns the new epoch.
fn refresh() -> u64 {
    if !FORK_HANDLERS.swap(true, Ordering::Relaxed) {
        // A child of a fork made while another thread held the lock would find it held for
        // good; these handlers take it across fork (registered after the allocator's, so run
        // before them: the lock order's first).
        pal::process::on_fork(lock_for_fork, unlock_in_parent, unlock_in_child);
    }
    // Read before the lock: reading takes the allocator's locks, and EPOCH is taken alone.
    let now = stats::stats();
    let mut epoch = EPOCH.lock();
    // SAFETY: we hold the lock (Snapshot invariant).
    unsafe { *SNAPSHOT.0.get() = now };
    *epoch += 1;
    *epoch
}

/// `f` of the snapshot (taken first if there is none yet).
fn with_snapshot<R>(f: impl Fn(&Stats) -> R) -> R {
    loop {
        let epoch = EPOCH.lock();
        if *epoch > 0 {
            // SAFETY: we hold the lock (Snapshot invariant).
            return f(unsafe { &*SNAPSHOT.0.get() });
        }
        drop(epoch);
        refresh();
    }
}

unsafe extern "C" fn lock_for_fork() {
    EPOCH.lock_for_fork();
}

unsafe extern "C" fn unlock_in_parent() {
    // SAFETY: `lock_for_fork` took it in this thread before the fork.
    unsafe { EPOCH.unlock_after_fork(false) };
}

unsafe extern "C" fn unlock_in_child() {
    // SAFETY: as above.
    unsafe { EPOCH.unlock_after_fork(true) };
}

// ---------------------------------------------------------------------------------------------
// The tree.

const fn get(f: fn(&Numbers) -> Option<Value>) -> Node {
    Node::Leaf(Leaf::Get(f))
}

const fn run_leaf(f: fn(&Call, &Numbers) -> Result<(), i32>) -> Node {
    Node::Leaf(Leaf::Run(f))
}

/// Every name Tally answers (see `docs/jemalloc-api.md` for the table beside jemalloc's).
static TREE: Node = Node::Named(&[
    ("version", get(|_| Some(Value::Str(VERSION)))),
    ("epoch", run_leaf(epoch)),
    ("background_thread", run_leaf(background_thread)),
    ("config", Node::Named(&CONFIG)),
    ("opt", Node::Named(&OPT)),
    ("thread", Node::Named(&THREAD)),
    ("arena", Node::Numbered(arena_index, &Node::Named(&ARENA_I))),
    ("arenas", Node::Named(&ARENAS_NODE)),
    ("prof", Node::Named(&PROF)),
    ("stats", Node::Named(&STATS)),
]);

/// `version`: the jemalloc API level Tally follows, then Tally's own version.
const VERSION: &CStr =
    match CStr::from_bytes_with_nul(concat!("5.3.0-0-tally-", env!("CARGO_PKG_VERSION"), "\0").as_bytes()) {
        Ok(s) => s,
        Err(_) => panic!("the version string is a C string"),
    };

fn epoch(call: &Call, _: &Numbers) -> Result<(), i32> {
    let written = call.new_value(Ty::U64)?;
    let now = if written.is_some() {
        refresh()
    } else {
        let e = *EPOCH.lock();
        if e == 0 {
            refresh()
        } else {
            e
        }
    };
    call.give(Value::U64(now))
}

fn background_thread(call: &Call, _: &Numbers) -> Result<(), i32> {
    let old = match call.new_value(Ty::Bool)? {
        Some(NewValue::Bool(on)) => decay::set_background(on).map_err(|()| EAGAIN)?,
        _ => decay::background_running(),
    };
    call.give(Value::Bool(old))
}

const fn yes(v: bool) -> Option<Value> {
    Some(Value::Bool(v))
}

static CONFIG: [(&str, Node); 12] = [
    ("cache_oblivious", get(|_| yes(false))),
    ("debug", get(|_| yes(cfg!(debug_assertions)))),
    ("fill", get(|_| yes(true))),
    ("lazy_lock", get(|_| yes(false))),
    ("malloc_conf", get(|_| Some(Value::Str(c"")))),
    ("opt_safety_checks", get(|_| yes(true))),
    ("prof", get(|_| yes(true))),
    ("prof_libgcc", get(|_| yes(false))),
    ("prof_libunwind", get(|_| yes(false))),
    ("stats", get(|_| yes(true))),
    ("utrace", get(|_| yes(false))),
    ("xmalloc", get(|_| yes(false))),
];

/// `opt.*`: every option of `options::TABLE`, under its own name (jemalloc's where jemalloc has
/// it), with jemalloc's C type.
static OPT: [(&str, Node); 27] = [
    ("abort_conf", get(|_| yes(options().abort_conf))),
    (
        "narenas",
        get(|_| Some(Value::Unsigned(options().narenas as u32))),
    ),
    ("tcache", get(|_| yes(options().tcache))),
    ("tcache_max", get(|_| Some(Value::Size(options().tcache_max)))),
    (
        "dirty_decay_ms",
        get(|_| Some(Value::SSize(options().dirty_decay_ms as isize))),
    ),
    (
        "muzzy_decay_ms",
        get(|_| Some(Value::SSize(options().muzzy_decay_ms as isize))),
    ),
    ("background_thread", get(|_| yes(options().background_thread))),
    ("stats_print", get(|_| yes(options().stats_print))),
    (
        "stats_print_opts",
        get(|_| Some(Value::Str(STATS_OPTS[options().stats_print_opts as usize & 7]))),
    ),
    ("junk", get(|_| Some(Value::Str(junk_word())))),
    ("thp", get(|_| Some(Value::Str(thp_word())))),
    ("zero", get(|_| yes(options().zero))),
    ("prof", get(|_| yes(options().prof))),
    ("prof_active", get(|_| yes(options().prof_active))),
    (
        "lg_prof_sample",
        get(|_| Some(Value::Size(options().lg_prof_sample as usize))),
    ),
    (
        "lg_prof_interval",
        get(|_| Some(Value::SSize(options().lg_prof_interval as isize))),
    ),
    ("prof_final", get(|_| yes(options().prof_final))),
    ("prof_leak", get(|_| yes(options().prof_leak))),
    ("prof_gdump", get(|_| yes(options().prof_gdump))),
    ("prof_accum", get(|_| yes(options().prof_accum))),
    ("prof_prefix", get(|_| c_text(&options().prof_prefix))),
    (
        "prof_signal",
        get(|_| Some(Value::Unsigned(options().prof_signal.max(0) as u32))),
    ),
    ("guard_rate", get(|_| Some(Value::U64(options().guard_rate)))),
    ("guard_slots", get(|_| Some(Value::Size(options().guard_slots)))),
    ("guard_report", get(|_| c_text(&options().guard_report))),
    ("prof_http", get(|_| c_text(&options().prof_http))),
    ("prof_http_remote", get(|_| yes(options().prof_http_remote))),
];

/// `stats_print_opts` letters by bit set (`options::STATS_FLAGS` is "Jab").
static STATS_OPTS: [&CStr; 8] = [c"", c"J", c"a", c"Ja", c"b", c"Jb", c"ab", c"Jab"];

fn junk_word() -> &'static CStr {
    let o = options();
    match (o.junk_alloc, o.junk_free) {
        (true, true) => c"true",
        (true, false) => c"alloc",
        (false, true) => c"free",
        (false, false) => c"false",
    }
}

/// `thp`'s word, as jemalloc's `opt.thp` gives it (with Tally's `auto`).
fn thp_word() -> &'static CStr {
    match options().thp {
        Thp::Auto => c"auto",
        Thp::Default => c"default",
        Thp::Always => c"always",
        Thp::Never => c"never",
    }
}

/// A text option's buffer (static, NUL-terminated: `Options`' invariant) as a C string.
fn c_text(buf: &'static [u8]) -> Option<Value> {
    CStr::from_bytes_until_nul(buf).ok().map(Value::Str)
}

static THREAD: [(&str, Node); 4] = [
    ("arena", run_leaf(thread_arena)),
    (
        "allocated",
        get(|_| Some(Value::U64(crate::tcache::thread_bytes().0))),
    ),
    (
        "deallocated",
        get(|_| Some(Value::U64(crate::tcache::thread_bytes().1))),
    ),
    ("tcache", Node::Named(&[("flush", run_leaf(thread_tcache_flush))])),
];

fn thread_arena(call: &Call, _: &Numbers) -> Result<(), i32> {
    let old = thread::thread_arena().index();
    if let Some(NewValue::Unsigned(to)) = call.new_value(Ty::Unsigned)? {
        // jemalloc answers an arena it does not have with EFAULT.
        if to as usize >= arena::arena_count() {
            return Err(EFAULT);
        }
        thread::move_to_arena(&ARENAS[to as usize]);
    }
    call.give(Value::Unsigned(old))
}

fn thread_tcache_flush(call: &Call, _: &Numbers) -> Result<(), i32> {
    call.neither()?;
    thread::flush_thread_cache();
    Ok(())
}

/// `arena.<i>`: an arena in use, or all of them (`narenas`, jemalloc's older spelling, or
/// [`ARENAS_ALL`]).
fn arena_index(i: usize) -> bool {
    i <= arena::arena_count() || i == ARENAS_ALL
}

static ARENA_I: [(&str, Node); 2] = [("purge", run_leaf(arena_purge)), ("decay", run_leaf(arena_decay))];

/// `arena.<i>.purge`: every free page of the arena (all arenas and cached huge mappings for the
/// all-arenas index) goes back to the OS now.
fn arena_purge(call: &Call, n: &Numbers) -> Result<(), i32> {
    call.neither()?;
    purge(n.0[0], true);
    Ok(())
}

/// `arena.<i>.decay`: the pages whose decay time has passed go back now.
fn arena_decay(call: &Call, n: &Numbers) -> Result<(), i32> {
    call.neither()?;
    purge(n.0[0], false);
    Ok(())
}

fn purge(i: usize, everything: bool) {
    if i < arena::arena_count() {
        decay::purge_arena(i, everything);
    } else {
        decay::purge_all(everything);
    }
}

static ARENAS_NODE: [(&str, Node); 13] = [
    (
        "narenas",
        get(|_| Some(Value::Unsigned(arena::arena_count() as u32))),
    ),
    ("page", get(|_| Some(Value::Size(PAGE)))),
    ("quantum", get(|_| Some(Value::Size(16)))),
    ("hugepage", get(|_| Some(Value::Size(2 << 20)))),
    ("tcache_max", get(|_| Some(Value::Size(largest_cached())))),
    ("nbins", get(|_| Some(Value::Unsigned(NSMALL as u32)))),
    ("nhbins", get(|_| Some(Value::Unsigned(NCACHED as u32)))),
    (
        "nlextents",
        get(|_| Some(Value::Unsigned((NCLASSES - NSMALL) as u32))),
    ),
    (
        "dirty_decay_ms",
        run_leaf(|call, _| decay_ms(call, &DIRTY_DECAY_MS)),
    ),
    (
        "muzzy_decay_ms",
        run_leaf(|call, _| decay_ms(call, &MUZZY_DECAY_MS)),
    ),
    ("bin", Node::Numbered(|j| j < NSMALL, &Node::Named(&ARENAS_BIN))),
    (
        "lextent",
        Node::Numbered(|j| j < NCLASSES - NSMALL, &Node::Named(&ARENAS_LEXTENT)),
    ),
    ("lookup", run_leaf(arenas_lookup)),
];

/// The largest size class thread caches keep under `tcache_max`.
fn largest_cached() -> usize {
    let max = options().tcache_max;
    (0..NCACHED)
        .map(|i| SizeClass(i as u8).size())
        .take_while(|&s| s <= max)
        .last()
        .unwrap_or(0)
}

/// `arenas.dirty_decay_ms` / `muzzy_decay_ms`: Tally has one setting for all arenas; -1 never,
/// 0 at once. jemalloc refuses values below -1 with `EFAULT`.
fn decay_ms(call: &Call, setting: &core::sync::atomic::AtomicI64) -> Result<(), i32> {
    let old = setting.load(Ordering::Relaxed);
    if let Some(NewValue::SSize(ms)) = call.new_value(Ty::SSize)? {
        if ms < -1 {
            return Err(EFAULT);
        }
        setting.store(ms as i64, Ordering::Relaxed);
    }
    call.give(Value::SSize(old as isize))
}

static ARENAS_BIN: [(&str, Node); 4] = [
    ("size", get(|n| Some(Value::Size(SizeClass(n.0[0] as u8).size())))),
    (
        "nregs",
        get(|n| Some(Value::Unsigned(SizeClass(n.0[0] as u8).slab_objects() as u32))),
    ),
    (
        "slab_size",
        get(|n| Some(Value::Size(SizeClass(n.0[0] as u8).pages() * PAGE))),
    ),
    ("nshards", get(|_| Some(Value::Unsigned(1)))),
];

static ARENAS_LEXTENT: [(&str, Node); 1] = [(
    "size",
    get(|n| Some(Value::Size(SizeClass((NSMALL + n.0[0]) as u8).size()))),
)];

/// `arenas.lookup`: written a pointer (`void *`), reads back the index of the arena owning the
/// block (`unsigned`); `EINVAL` for a pointer Tally did not hand out or one outside any arena
/// (a block mapped on its own, or guarded).
fn arenas_lookup(call: &Call, _: &Numbers) -> Result<(), i32> {
    let Some(NewValue::Size(p)) = call.new_value(Ty::Size)? else {
        return Err(EINVAL);
    };
    let i = crate::block::arena_of(p as *const u8).ok_or(EINVAL)?;
    call.give(Value::Unsigned(i))
}

static PROF: [(&str, Node); 5] = [
    ("active", run_leaf(prof_active)),
    ("dump", run_leaf(prof_dump)),
    ("reset", run_leaf(prof_reset)),
    ("lg_sample", get(|_| Some(Value::Size(prof_lg_sample())))),
    ("interval", get(|_| Some(Value::U64(prof_interval())))),
];

fn prof_lg_sample() -> usize {
    if prof_hooks::profiler_on() {
        PROFILER.sampling.lg() as usize
    } else {
        options().lg_prof_sample as usize
    }
}

fn prof_interval() -> u64 {
    match options().lg_prof_interval {
        lg if lg >= 0 => 1u64 << lg.min(63),
        _ => 0,
    }
}

/// `prof.active`: sampling on or off; turning it on without `prof:true` is `ENOENT` (there is
/// no profiler to turn on), as in jemalloc.
fn prof_active(call: &Call, _: &Numbers) -> Result<(), i32> {
    let on = prof_hooks::profiler_on();
    let old = on && PROFILER.sampling.is_active();
    if let Some(NewValue::Bool(v)) = call.new_value(Ty::Bool)? {
        if !on && v {
            return Err(ENOENT);
        }
        if on {
            PROFILER.sampling.set_active(v);
        }
    }
    call.give(Value::Bool(old))
}

/// `prof.dump`: writes a profile to the path written (`const char *`), or one named after
/// `prof_prefix` when none is; `ENOENT` without `prof:true`, `EFAULT` when it cannot be written.
fn prof_dump(call: &Call, _: &Numbers) -> Result<(), i32> {
    // jemalloc asks whether there is a profiler before anything else.
    if !prof_hooks::profiler_on() {
        return Err(ENOENT);
    }
    call.write_only()?;
    let path = call.new_value(Ty::Str)?;
    let written = match path {
        Some(NewValue::Str(p)) if !p.is_null() => {
            // SAFETY: the caller wrote a `const char *`, a NUL-terminated path (jemalloc's
            // contract for `prof.dump`).
            let path = unsafe { CStr::from_ptr(p) }.to_bytes();
            if path.is_empty() {
                return Err(EINVAL);
            }
            prof_hooks::dump_to(path)
        }
        _ => prof_hooks::dump_manual().map(|_| ()),
    };
    written.map_err(|_| EFAULT)
}

/// `prof.reset`: forgets every sample so far; a `size_t` written sets the new `lg_prof_sample`.
fn prof_reset(call: &Call, _: &Numbers) -> Result<(), i32> {
    if !prof_hooks::profiler_on() {
        return Err(ENOENT);
    }
    call.write_only()?;
    let lg = call.new_value(Ty::Size)?;
    if let Some(NewValue::Size(lg)) = lg {
        PROFILER.sampling.set_lg(lg.min(40) as u32);
    }
    PROFILER.reset();
    Ok(())
}

static STATS: [(&str, Node); 8] = [
    (
        "allocated",
        get(|_| Some(Value::Size(with_snapshot(|s| s.allocated) as usize))),
    ),
    (
        "active",
        get(|_| Some(Value::Size(with_snapshot(|s| s.active) as usize))),
    ),
    (
        "metadata",
        get(|_| Some(Value::Size(with_snapshot(|s| s.metadata) as usize))),
    ),
    (
        "resident",
        get(|_| Some(Value::Size(with_snapshot(|s| s.resident) as usize))),
    ),
    (
        "mapped",
        get(|_| Some(Value::Size(with_snapshot(|s| s.mapped) as usize))),
    ),
    (
        "retained",
        get(|_| Some(Value::Size(with_snapshot(|s| s.retained) as usize))),
    ),
    ("background_thread", Node::Named(&STATS_BACKGROUND)),
    (
        "arenas",
        Node::Numbered(stats_arena_index, &Node::Named(&STATS_ARENA)),
    ),
];

static STATS_BACKGROUND: [(&str, Node); 3] = [
    (
        "num_threads",
        get(|_| Some(Value::Size(with_snapshot(|s| s.background_thread) as usize))),
    ),
    (
        "num_runs",
        get(|_| Some(Value::U64(with_snapshot(|s| s.counters.purge_passes)))),
    ),
    (
        "run_interval",
        get(|_| Some(Value::U64(decay::interval_ms().unwrap_or(0) * 1_000_000))),
    ),
];

/// `stats.arenas.<i>`: an arena in use, or [`ARENAS_ALL`] for all of them merged.
fn stats_arena_index(i: usize) -> bool {
    i < arena::arena_count() || i == ARENAS_ALL
}

/// An arena's figure from the snapshot: arena `i`'s, or the sum over all for [`ARENAS_ALL`].
fn arena_sum(i: usize, f: impl Fn(&stats::ArenaStats) -> u64) -> u64 {
    with_snapshot(|s| {
        if i == ARENAS_ALL {
            s.arenas[..s.narenas].iter().map(&f).sum()
        } else {
            s.arenas.get(i).map(&f).unwrap_or(0)
        }
    })
}

/// A figure only the whole process has (per size class, Tally counts for all arenas together):
/// under [`ARENAS_ALL`] only.
fn merged<T>(n: &Numbers, f: impl Fn(&Stats) -> T) -> Option<T> {
    (n.0[0] == ARENAS_ALL).then(|| with_snapshot(f))
}

fn size(v: u64) -> Option<Value> {
    Some(Value::Size(v as usize))
}

fn count(v: u64) -> Option<Value> {
    Some(Value::U64(v))
}

/// Bytes in live small blocks.
fn small_allocated(s: &Stats) -> u64 {
    s.classes[..NSMALL].iter().map(|c| c.live * c.size).sum()
}

static STATS_ARENA: [(&str, Node); 15] = [
    (
        "nthreads",
        get(|n| Some(Value::Unsigned(arena_sum(n.0[0], |a| a.threads) as u32))),
    ),
    (
        "dirty_decay_ms",
        get(|_| Some(Value::SSize(DIRTY_DECAY_MS.load(Ordering::Relaxed) as isize))),
    ),
    (
        "muzzy_decay_ms",
        get(|_| Some(Value::SSize(MUZZY_DECAY_MS.load(Ordering::Relaxed) as isize))),
    ),
    ("pactive", get(|n| size(arena_sum(n.0[0], |a| a.active_pages)))),
    ("pdirty", get(|n| size(arena_sum(n.0[0], |a| a.dirty_pages)))),
    ("pmuzzy", get(|n| size(arena_sum(n.0[0], |a| a.muzzy_pages)))),
    (
        "mapped",
        get(|n| size(arena_sum(n.0[0], |a| a.chunks * crate::chunk::CHUNK as u64))),
    ),
    (
        "retained",
        get(|n| size(arena_sum(n.0[0], |a| a.retained_pages * PAGE as u64))),
    ),
    (
        "dirty_purged",
        get(|n| count(arena_sum(n.0[0], |a| a.purged_pages))),
    ),
    (
        "small",
        Node::Named(&[
            ("allocated", get(|n| merged(n, small_allocated).and_then(size))),
            (
                "nmalloc",
                get(|n| merged(n, |s| classes_sum(s, 0..NSMALL, |c| c.nmalloc)).and_then(count)),
            ),
            (
                "ndalloc",
                get(|n| merged(n, |s| classes_sum(s, 0..NSMALL, |c| c.nfree)).and_then(count)),
            ),
            (
                "nrequests",
                get(|n| merged(n, |s| classes_sum(s, 0..NSMALL, |c| c.nmalloc)).and_then(count)),
            ),
        ]),
    ),
    (
        "large",
        Node::Named(&[
            (
                "allocated",
                get(|n| merged(n, |s| s.allocated - small_allocated(s)).and_then(size)),
            ),
            ("nmalloc", get(|n| merged(n, large_nmalloc).and_then(count))),
            (
                "ndalloc",
                get(|n| merged(n, |s| large_nmalloc(s) - large_live(s)).and_then(count)),
            ),
            ("nrequests", get(|n| merged(n, large_nmalloc).and_then(count))),
        ]),
    ),
    ("bins", Node::Numbered(|j| j < NSMALL, &Node::Named(&STATS_BIN))),
    (
        "lextents",
        Node::Numbered(|j| j < NCLASSES - NSMALL, &Node::Named(&STATS_LEXTENT)),
    ),
    ("resident", get(|n| size(arena_resident(n.0[0])))),
    ("metadata", get(|n| merged(n, |s| s.metadata).and_then(size))),
];

fn classes_sum(s: &Stats, classes: core::ops::Range<usize>, f: impl Fn(&stats::ClassStats) -> u64) -> u64 {
    s.classes[classes].iter().map(f).sum()
}

/// Large allocations so far: the large classes' and the huge blocks'.
fn large_nmalloc(s: &Stats) -> u64 {
    classes_sum(s, NSMALL..NCLASSES, |c| c.nmalloc) + s.counters.huge_allocs
}

fn large_live(s: &Stats) -> u64 {
    classes_sum(s, NSMALL..NCLASSES, |c| c.live) + s.huge_live
}

/// Pages an arena may have resident: in use, dirty, muzzy, and its chunks' headers; for all
/// arenas, the process's `resident`.
fn arena_resident(i: usize) -> u64 {
    if i == ARENAS_ALL {
        return with_snapshot(|s| s.resident);
    }
    let header = (crate::chunk::HEADER_PAGES * PAGE) as u64;
    arena_sum(i, |a| {
        (a.active_pages + a.dirty_pages + a.muzzy_pages) * PAGE as u64 + a.chunks * header
    })
}

/// A size class's figure (bins and lextents under [`ARENAS_ALL`]); `first` is the class of
/// number 0.
fn class_figure(n: &Numbers, first: usize, f: fn(&stats::ClassStats) -> u64) -> Option<u64> {
    merged(n, |s| f(&s.classes[first + n.0[1]]))
}

static STATS_BIN: [(&str, Node); 6] = [
    (
        "nmalloc",
        get(|n| class_figure(n, 0, |c| c.nmalloc).and_then(count)),
    ),
    (
        "ndalloc",
        get(|n| class_figure(n, 0, |c| c.nfree).and_then(count)),
    ),
    (
        "nrequests",
        get(|n| class_figure(n, 0, |c| c.nmalloc).and_then(count)),
    ),
    ("curregs", get(|n| class_figure(n, 0, |c| c.live).and_then(size))),
    (
        "curslabs",
        get(|n| class_figure(n, 0, |c| c.slabs).and_then(size)),
    ),
    (
        "nfills",
        get(|n| class_figure(n, 0, |c| c.misses).and_then(count)),
    ),
];

static STATS_LEXTENT: [(&str, Node); 4] = [
    (
        "nmalloc",
        get(|n| class_figure(n, NSMALL, |c| c.nmalloc).and_then(count)),
    ),
    (
        "ndalloc",
        get(|n| class_figure(n, NSMALL, |c| c.nfree).and_then(count)),
    ),
    (
        "nrequests",
        get(|n| class_figure(n, NSMALL, |c| c.nmalloc).and_then(count)),
    ),
    (
        "curlextents",
        get(|n| class_figure(n, NSMALL, |c| c.live).and_then(size)),
    ),
];

/// Every leaf's full name, for tests and the documentation check: calls `visit(name, mib)` with
/// numbered components as `0` (and `4096` under `stats.arenas`).
pub fn for_each_name(visit: &mut dyn FnMut(&str, &[usize])) {
    let mut name = [0u8; 128];
    let mut mib = [0usize; MAX_DEPTH];
    walk_all(&TREE, &mut name, 0, &mut mib, 0, visit);
}

fn walk_all(
    node: &Node,
    name: &mut [u8; 128],
    len: usize,
    mib: &mut [usize; MAX_DEPTH],
    depth: usize,
    visit: &mut dyn FnMut(&str, &[usize]),
) {
    let push = |name: &mut [u8; 128], part: &[u8]| {
        let start = if len == 0 { 0 } else { len + 1 };
        if len > 0 {
            name[len] = b'.';
        }
        name[start..start + part.len()].copy_from_slice(part);
        start + part.len()
    };
    match node {
        Node::Leaf(_) => visit(core::str::from_utf8(&name[..len]).unwrap_or(""), &mib[..depth]),
        Node::Named(children) => {
            for (i, (part, child)) in children.iter().enumerate() {
                let end = push(name, part.as_bytes());
                mib[depth] = i;
                walk_all(child, name, end, mib, depth + 1, visit);
            }
        }
        Node::Numbered(_, child) => {
            let under_stats = name[..len].ends_with(b"stats.arenas");
            let (n, text): (usize, &[u8]) = if under_stats {
                (ARENAS_ALL, b"4096")
            } else {
                (0, b"0")
            };
            let end = push(name, text);
            mib[depth] = n;
            walk_all(child, name, end, mib, depth + 1, visit);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_size(name: &str) -> Result<usize, i32> {
        let mut v = 0usize;
        let mut len = core::mem::size_of::<usize>();
        // SAFETY: `v` is valid for `len` bytes, `len` for reading and writing.
        let call = unsafe { Call::new((&mut v as *mut usize).cast(), &mut len, core::ptr::null(), 0) };
        match by_name(name.as_bytes(), &call) {
            0 => Ok(v),
            e => Err(e),
        }
    }

    /// Every leaf is reached both by name and by its MIB, and a MIB of a name's first
    /// components leaves the rest to the caller.
    #[test]
    fn names_and_mibs_reach_the_same_leaves() {
        let mut leaves = 0;
        for_each_name(&mut |name, mib| {
            let mut got = [usize::MAX; MAX_DEPTH];
            assert_eq!(name_to_mib(name.as_bytes(), &mut got), Ok(mib.len()), "{name}");
            assert_eq!(&got[..mib.len()], mib, "{name}");
            assert!(walk_mib(mib).is_ok(), "{name}");
            leaves += 1;
        });
        assert!(leaves > 100, "{leaves} leaves");
        let mut partial = [0usize; 3];
        assert_eq!(name_to_mib(b"arenas.bin.5.size", &mut partial), Ok(3));
        assert_eq!(partial[2], 5);
        assert_eq!(name_to_mib(b"arenas.bin", &mut [0; 4]), Err(ENOENT));
        assert_eq!(
            name_to_mib(
                format!("arenas.bin.{}.size", crate::size_class::NSMALL).as_bytes(),
                &mut [0; 4]
            ),
            Err(ENOENT),
            "past nbins"
        );
        assert_eq!(name_to_mib(b"arenas.bin.-1.size", &mut [0; 4]), Err(ENOENT));
        assert!(walk_mib(&[usize::MAX]).is_err());
    }

    /// Statistics hold still until `epoch` is written (a snapshot behind the `Ctl` lock, taken
    /// alone: the lock-order checker is on in these tests).
    #[test]
    fn statistics_move_with_the_epoch() {
        let mut epoch = 0u64;
        let mut len = 8;
        // SAFETY: `epoch` is valid for 8 bytes.
        let call = unsafe {
            Call::new(
                (&mut epoch as *mut u64).cast(),
                &mut len,
                (&epoch as *const u64).cast(),
                8,
            )
        };
        assert_eq!(by_name(b"epoch", &call), 0);
        let before = read_size("stats.mapped").unwrap();
        let held: Vec<Vec<u8>> = (0..64).map(|_| vec![1u8; 64 << 10]).collect();
        assert_eq!(read_size("stats.mapped"), Ok(before), "no epoch, no change");
        assert_eq!(by_name(b"epoch", &call), 0);
        assert!(read_size("stats.allocated").unwrap() > 0);
        drop(held);
        assert_eq!(read_size("stats.nothing"), Err(ENOENT));
        assert_eq!(
            read_size("arenas.narenas"),
            Err(EINVAL),
            "an unsigned read as a size_t"
        );
    }
}
