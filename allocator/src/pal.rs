//! Platform abstraction layer: the whole contract between Tally and the operating system.
//!
//! Every system call Tally makes lives here: mapping and unmapping memory, advice, `mremap`,
//! the environment, thread-exit hooks, `fork` hooks, the CPU count, and writing a diagnostic to
//! stderr. Nothing in this module allocates through Tally (or at all): it is called from inside
//! `malloc`, sometimes before Tally is initialized.

use core::ffi::{c_char, c_void, CStr};
use core::fmt::{self, Write};
use core::ptr;

/// The page size Tally is built for. Checked against the kernel's at initialization.
pub const PAGE: usize = 4096;
/// log2 of [`PAGE`].
pub const PAGE_SHIFT: u32 = 12;

/// Maps `size` bytes of fresh, zeroed, read-write anonymous memory.
///
/// Returns null when the kernel refuses. `size` must be a multiple of [`PAGE`].
pub fn map(size: usize) -> *mut u8 {
    debug_assert!(size % PAGE == 0);
    // SAFETY: an anonymous private mapping at an address of the kernel's choosing touches no
    // existing memory; the arguments are valid by construction.
    let p = unsafe {
        libc::mmap(
            ptr::null_mut(),
            size,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        ptr::null_mut()
    } else {
        p.cast()
    }
}

/// Maps `size` bytes aligned to `align` (a power of two, at least [`PAGE`]).
///
/// Over-maps by `align` and unmaps the slack on both sides, so only `size` bytes stay mapped.
/// Returns null when the kernel refuses.
pub fn map_aligned(size: usize, align: usize) -> *mut u8 {
    debug_assert!(align.is_power_of_two() && align >= PAGE && size % PAGE == 0);
    let Some(total) = size.checked_add(align) else {
        return ptr::null_mut();
    };
    let raw = map(total);
    if raw.is_null() {
        return raw;
    }
    let start = raw as usize;
    let aligned = (start + align - 1) & !(align - 1);
    let lead = aligned - start;
    let trail = total - lead - size;
    // SAFETY: both ranges lie inside the mapping just made and are page multiples; nothing else
    // refers to them yet.
    unsafe {
        if lead != 0 {
            unmap(raw, lead);
        }
        if trail != 0 {
            unmap((aligned + size) as *mut u8, trail);
        }
    }
    aligned as *mut u8
}

/// Unmaps `[p, p + size)`.
///
/// # Safety
/// The range must be mapped memory that Tally owns and that nothing will touch again.
pub unsafe fn unmap(p: *mut u8, size: usize) {
    // SAFETY: the caller owns the range and promises it is dead.
    let rc = unsafe { libc::munmap(p.cast(), size) };
    debug_assert_eq!(rc, 0);
}

/// Gives the pages of `[p, p + size)` back to the OS now (`MADV_DONTNEED`): they stop counting
/// as resident and read as zero when touched again.
///
/// # Safety
/// The range must be page-aligned memory owned by Tally whose contents are dead.
pub unsafe fn discard(p: *mut u8, size: usize) {
    // SAFETY: the caller owns the range and promises its contents are dead.
    unsafe { libc::madvise(p.cast(), size, libc::MADV_DONTNEED) };
}

/// Lets the OS take the pages of `[p, p + size)` when it needs memory (`MADV_FREE`); until then
/// they stay resident and keep their contents.
///
/// # Safety
/// The range must be page-aligned memory owned by Tally whose contents are dead.
pub unsafe fn discard_lazily(p: *mut u8, size: usize) {
    // SAFETY: the caller owns the range and promises its contents are dead.
    unsafe { libc::madvise(p.cast(), size, libc::MADV_FREE) };
}

/// Milliseconds on a monotonic clock, cheaply (the coarse clock, read in user space through the
/// vDSO; resolution a few milliseconds).
pub fn now_ms() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    ts.tv_sec as u64 * 1000 + ts.tv_nsec as u64 / 1_000_000
}

/// Sleeps for `ms` milliseconds (used by the background thread only).
pub fn sleep_ms(ms: u64) {
    let ts = libc::timespec {
        tv_sec: (ms / 1000) as libc::time_t,
        tv_nsec: ((ms % 1000) * 1_000_000) as libc::c_long,
    };
    // SAFETY: `ts` is a valid timespec; the remainder pointer may be null.
    unsafe { libc::nanosleep(&ts, core::ptr::null_mut()) };
}

/// Starts a detached thread running `body`. Returns false if it could not be created.
pub fn spawn_thread(body: extern "C" fn(*mut c_void) -> *mut c_void) -> bool {
    let mut thread: libc::pthread_t = 0;
    // SAFETY: `thread` is a valid out-pointer; `body` has the signature pthread expects and lives
    // for the whole process.
    let rc = unsafe { libc::pthread_create(&mut thread, core::ptr::null(), body, core::ptr::null_mut()) };
    if rc != 0 {
        return false;
    }
    // SAFETY: `thread` was just created and is joined by no one.
    unsafe { libc::pthread_detach(thread) };
    true
}

/// The process id.
pub fn pid() -> u32 {
    // SAFETY: getpid has no preconditions.
    unsafe { libc::getpid() as u32 }
}

/// Moves or resizes the mapping `[old, old + old_size)` to `[new, new + new_size)` without
/// copying, replacing whatever was mapped at `new` (which must be a reservation Tally owns).
///
/// Returns false when the kernel refuses; the old mapping is then unchanged.
///
/// # Safety
/// `old` must be a whole mapping owned by Tally; `[new, new + new_size)` must be owned by Tally
/// and unused.
pub unsafe fn remap_to(old: *mut u8, old_size: usize, new: *mut u8, new_size: usize) -> bool {
    // SAFETY: both ranges are owned by Tally per the caller's contract.
    let p = unsafe {
        libc::mremap(
            old.cast(),
            old_size,
            new_size,
            libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED,
            new.cast::<c_void>(),
        )
    };
    p != libc::MAP_FAILED
}

/// Grows or shrinks the mapping at `old` in place. Returns false when it cannot grow in place.
///
/// # Safety
/// `old` must be a whole mapping owned by Tally, `old_size` its length.
pub unsafe fn remap_in_place(old: *mut u8, old_size: usize, new_size: usize) -> bool {
    // SAFETY: without MREMAP_MAYMOVE the kernel only resizes the caller's own mapping.
    let p = unsafe { libc::mremap(old.cast(), old_size, new_size, 0) };
    p != libc::MAP_FAILED
}

/// Bytes of the thread block (see [`thread_block`]).
pub const THREAD_BLOCK_BYTES: usize = 2048;

// The thread block: thread-local storage in the initial-exec model, so finding it is a read of
// the thread pointer plus a link-time offset, with no call to `__tls_get_addr` (which a shared
// library's ordinary thread-locals pay on every access). `.tbss` is zero in every new thread.
#[cfg(target_arch = "x86_64")]
core::arch::global_asm!(
    ".pushsection .tbss,\"awT\",@nobits",
    ".p2align 6",
    ".globl tally_thread_block",
    ".hidden tally_thread_block",
    ".type tally_thread_block, @object",
    ".size tally_thread_block, 2048",
    "tally_thread_block:",
    ".zero 2048",
    ".popsection",
);

/// The calling thread's block: [`THREAD_BLOCK_BYTES`] bytes, 64-byte aligned, all zero when
/// the thread starts, that only this thread uses. The address is stable for the thread's life.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub fn thread_block() -> *mut u8 {
    let p: usize;
    // SAFETY: reads the thread pointer (`fs:0` holds its own address on x86-64 Linux) and adds
    // the block's initial-exec offset from the GOT; both are valid for the life of the thread.
    unsafe {
        core::arch::asm!(
            "mov {p}, qword ptr fs:[0]",
            "add {p}, qword ptr [rip + tally_thread_block@GOTTPOFF]",
            p = out(reg) p,
            options(pure, readonly, nostack),
        );
    }
    p as *mut u8
}

#[cfg(not(target_arch = "x86_64"))]
#[repr(C, align(64))]
struct ThreadBlock([u8; THREAD_BLOCK_BYTES]);

#[cfg(not(target_arch = "x86_64"))]
std::thread_local! {
    static THREAD_BLOCK: core::cell::UnsafeCell<ThreadBlock> =
        const { core::cell::UnsafeCell::new(ThreadBlock([0; THREAD_BLOCK_BYTES])) };
}

/// The calling thread's block: [`THREAD_BLOCK_BYTES`] bytes, 64-byte aligned, all zero when
/// the thread starts, that only this thread uses. The address is stable for the thread's life.
#[cfg(not(target_arch = "x86_64"))]
#[inline(always)]
pub fn thread_block() -> *mut u8 {
    THREAD_BLOCK.with(|b| b.get().cast())
}

extern "C" {
    /// The ELF header of the module this code is linked into (defined by the linker).
    static __ehdr_start: libc::Elf64_Ehdr;
}

/// The address range of Tally's own code when it is a shared library of its own (`libtally.so`,
/// preloaded or linked), found from its ELF program headers in memory; `None` when Tally is
/// linked into the main executable. No locks, no allocation.
pub fn own_code_range() -> Option<(usize, usize)> {
    // SAFETY: __ehdr_start is the mapped ELF header of this module; its program headers are
    // mapped with it (they are inside the first loadable segment for every linker we use).
    unsafe {
        let ehdr = core::ptr::addr_of!(__ehdr_start);
        let base = ehdr as usize;
        let phdrs = base + (*ehdr).e_phoff as usize;
        if phdrs == libc::getauxval(libc::AT_PHDR) as usize {
            return None;
        }
        let mut range: Option<(usize, usize)> = None;
        for i in 0..(*ehdr).e_phnum as usize {
            let ph = &*((phdrs + i * core::mem::size_of::<libc::Elf64_Phdr>()) as *const libc::Elf64_Phdr);
            if ph.p_type == libc::PT_LOAD && ph.p_flags & libc::PF_X != 0 {
                let (lo, hi) = (
                    base + ph.p_vaddr as usize,
                    base + (ph.p_vaddr + ph.p_memsz) as usize,
                );
                range = Some(match range {
                    Some((a, b)) => (a.min(lo), b.max(hi)),
                    None => (lo, hi),
                });
            }
        }
        range
    }
}

/// Installs `handler` for signal `sig` (with `SA_RESTART`). Returns false on failure.
pub fn on_signal(sig: i32, handler: extern "C" fn(i32)) -> bool {
    // SAFETY: a zeroed sigaction is valid; we fill the handler and flags, and the handler lives
    // for the whole process.
    unsafe {
        let mut action: libc::sigaction = core::mem::zeroed();
        action.sa_sigaction = handler as usize;
        action.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut action.sa_mask);
        libc::sigaction(sig, &action, core::ptr::null_mut()) == 0
    }
}

/// Reads an environment variable without allocating; set-uid programs see nothing
/// (`secure_getenv`). The bytes live as long as the environment is not modified, which Tally
/// assumes for the short time it parses them.
pub fn getenv(name: &CStr) -> Option<&'static [u8]> {
    // SAFETY: `name` is NUL-terminated; secure_getenv returns null or a NUL-terminated string
    // owned by the environment.
    let p = unsafe { secure_getenv(name.as_ptr()) };
    if p.is_null() {
        None
    } else {
        // SAFETY: non-null results of secure_getenv are valid NUL-terminated strings.
        Some(unsafe { CStr::from_ptr(p as *const c_char) }.to_bytes())
    }
}

extern "C" {
    /// glibc's `getenv` that returns null in set-uid and set-gid programs.
    fn secure_getenv(name: *const c_char) -> *mut c_char;
}

/// Number of CPUs this process may run on (at least 1).
pub fn cpu_count() -> usize {
    // SAFETY: cpu_set_t is plain data; zeroed is a valid empty set.
    let mut set: libc::cpu_set_t = unsafe { core::mem::zeroed() };
    // SAFETY: the pointer and size describe `set`, which lives on this stack frame.
    let rc = unsafe { libc::sched_getaffinity(0, core::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    if rc == 0 {
        // SAFETY: `set` was filled by the kernel.
        let n = unsafe { libc::CPU_COUNT(&set) };
        if n > 0 {
            return n as usize;
        }
    }
    1
}

/// The kernel's page size.
pub fn kernel_page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_PAGESIZE) as usize }
}

/// Creates a thread-specific key whose destructor runs at thread exit for threads that set it.
pub fn thread_exit_key(destructor: unsafe extern "C" fn(*mut c_void)) -> Option<libc::pthread_key_t> {
    let mut key: libc::pthread_key_t = 0;
    // SAFETY: `key` is a valid out-pointer; the destructor has the required signature.
    let rc = unsafe { libc::pthread_key_create(&mut key, Some(destructor)) };
    (rc == 0).then_some(key)
}

/// Arms the thread-exit destructor of `key` for the calling thread.
pub fn arm_thread_exit(key: libc::pthread_key_t, value: *mut c_void) {
    // SAFETY: `key` came from `thread_exit_key`.
    unsafe { libc::pthread_setspecific(key, value) };
}

/// Registers fork handlers (see `pthread_atfork`).
pub fn on_fork(
    prepare: unsafe extern "C" fn(),
    parent: unsafe extern "C" fn(),
    child: unsafe extern "C" fn(),
) {
    // SAFETY: the handlers are `extern "C"` functions with the required signature that live for
    // the whole process.
    unsafe { libc::pthread_atfork(Some(prepare), Some(parent), Some(child)) };
}

/// Sets the calling thread's `errno`.
pub fn set_errno(value: i32) {
    // SAFETY: __errno_location always returns the calling thread's errno slot.
    unsafe { *libc::__errno_location() = value };
}

/// The descriptor Tally writes diagnostics to: 2, or a private duplicate of it.
static STDERR_FD: core::sync::atomic::AtomicI32 = core::sync::atomic::AtomicI32::new(2);

/// Keeps a private, close-on-exec duplicate of stderr for messages printed at exit, so that a
/// program closing fd 2 before it exits does not silence them.
pub fn keep_stderr() {
    // SAFETY: F_DUPFD_CLOEXEC only creates a new descriptor.
    let fd = unsafe { libc::fcntl(2, libc::F_DUPFD_CLOEXEC, 100) };
    if fd >= 0 {
        STDERR_FD.store(fd, core::sync::atomic::Ordering::Relaxed);
    }
}

/// Writes all of `bytes` to stderr, retrying short writes; errors are ignored (there is nowhere
/// left to report them).
pub fn write_stderr(mut bytes: &[u8]) {
    let fd = STDERR_FD.load(core::sync::atomic::Ordering::Relaxed);
    while !bytes.is_empty() {
        // SAFETY: the pointer and length describe the live slice `bytes`.
        let n = unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
        if n <= 0 {
            // SAFETY: __errno_location is always valid.
            if n < 0 && unsafe { *libc::__errno_location() } == libc::EINTR {
                continue;
            }
            return;
        }
        bytes = &bytes[n as usize..];
    }
}

/// A fixed-capacity text buffer for messages built inside `malloc`: formatting into it never
/// allocates; text past the capacity is cut off.
pub struct LineBuf {
    buf: [u8; 512],
    len: usize,
}

impl LineBuf {
    /// An empty buffer.
    pub const fn new() -> Self {
        LineBuf {
            buf: [0; 512],
            len: 0,
        }
    }

    /// The text written so far.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl Default for LineBuf {
    fn default() -> Self {
        Self::new()
    }
}

impl Write for LineBuf {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let room = self.buf.len() - self.len;
        let n = s.len().min(room);
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

/// Formats a message without allocating and writes it to stderr.
pub fn print(args: fmt::Arguments<'_>) {
    let mut line = LineBuf::new();
    let _ = line.write_fmt(args);
    write_stderr(line.as_bytes());
}

/// Prints a one-line message to stderr and aborts the process. Used for errors that must not be
/// survived, such as `free` of a pointer Tally never returned.
#[cold]
pub fn fatal(args: fmt::Arguments<'_>) -> ! {
    print(args);
    // SAFETY: abort has no preconditions.
    unsafe { libc::abort() }
}
