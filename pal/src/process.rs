//! The process: environment, CPUs, page size, pid, `errno`, `fork` and signal hooks, signal
//! names, random bits, and where Tally's own code is mapped.

use core::ffi::{c_char, CStr};

/// Reads an environment variable without allocating; set-uid and set-gid programs see nothing
/// (as with `secure_getenv`: the kernel's `AT_SECURE`). The bytes live as long as the
/// environment is not modified, which Tally assumes for the short time it parses them.
///
/// The C library's `secure_getenv` would do the same, but from a page of the C library's code
/// that a program may never run otherwise: calling it maps that page's whole 64 KiB window into
/// the program's resident memory (the kernel's fault-around). So the environment is read here,
/// from `environ`, and so are the CPU count and the page size below, with a system call and
/// the auxiliary vector (whose functions lie in the same window as `mmap`, which Tally calls
/// anyway), and the clocks through the vDSO (`time.rs`). Together about 50 KiB less resident
/// memory in a small program, on average over where the library happens to be mapped
/// (docs/benchmarks.md, thirteenth pass).
#[inline]
pub fn getenv(name: &CStr) -> Option<&'static [u8]> {
    // SAFETY: getauxval has no preconditions.
    if unsafe { libc::getauxval(libc::AT_SECURE) } != 0 {
        return None;
    }
    let name = name.to_bytes();
    // SAFETY: `environ` is null or the process's array of NUL-terminated `NAME=value` strings,
    // ended by a null pointer (the C runtime's contract); each is read up to its NUL only.
    unsafe {
        let mut entry = environ;
        if entry.is_null() {
            return None;
        }
        while !(*entry).is_null() {
            let s = *entry as *const u8;
            // The name's bytes first, then `=`: a mismatch stops before the string's NUL.
            if (0..name.len()).all(|i| *s.add(i) == name[i]) && *s.add(name.len()) == b'=' {
                let value = s.add(name.len() + 1);
                // Volatile reads: a plain loop would be compiled into a call of the C
                // library's `strlen`, the page this function keeps away from.
                let mut len = 0;
                while core::ptr::read_volatile(value.add(len)) != 0 {
                    len += 1;
                }
                return Some(core::slice::from_raw_parts(value, len));
            }
            entry = entry.add(1);
        }
    }
    None
}

extern "C" {
    /// The process's environment (POSIX).
    static environ: *const *const c_char;
}

/// Number of CPUs this process may run on (at least 1).
#[inline]
pub fn cpu_count() -> usize {
    // SAFETY: cpu_set_t is plain data; zeroed is a valid empty set.
    let mut set: libc::cpu_set_t = unsafe { core::mem::zeroed() };
    let size = core::mem::size_of::<libc::cpu_set_t>();
    // SAFETY: the pointer and size describe `set`, which lives on this stack frame. The system
    // call, not the C library's wrapper (see `getenv`): it returns the bytes of the mask it
    // wrote, the rest of `set` staying empty.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_sched_getaffinity,
            0,
            size,
            &mut set as *mut libc::cpu_set_t,
        )
    };
    if rc > 0 {
        // SAFETY: `set` was filled by the kernel.
        let n = unsafe { libc::CPU_COUNT(&set) };
        if n > 0 {
            return n as usize;
        }
    }
    1
}

/// The kernel's page size.
#[inline]
pub fn kernel_page_size() -> usize {
    // SAFETY: getauxval has no preconditions. From the auxiliary vector, not `sysconf` (see
    // `getenv`).
    match unsafe { libc::getauxval(libc::AT_PAGESZ) } as usize {
        // SAFETY: sysconf has no preconditions.
        0 => unsafe { libc::sysconf(libc::_SC_PAGESIZE) as usize },
        size => size,
    }
}

/// The process id.
#[inline]
pub fn pid() -> u32 {
    // SAFETY: getpid has no preconditions.
    unsafe { libc::getpid() as u32 }
}

/// The calling thread's `errno`.
#[inline]
pub fn errno() -> i32 {
    // SAFETY: __errno_location returns this thread's errno slot.
    unsafe { *libc::__errno_location() }
}

/// Sets the calling thread's `errno`.
#[inline]
pub fn set_errno(value: i32) {
    // SAFETY: __errno_location always returns the calling thread's errno slot.
    unsafe { *libc::__errno_location() = value };
}

/// Registers fork handlers (what `pthread_atfork` does): `prepare` runs in the forking thread before the
/// fork, `parent` and `child` after it in the parent and in the child's only thread.
#[inline]
pub fn on_fork(
    prepare: unsafe extern "C" fn(),
    parent: unsafe extern "C" fn(),
    child: unsafe extern "C" fn(),
) {
    // glibc's `pthread_atfork` is not in libc.so but in the static libc_nonshared.a, a stub that
    // calls `__register_atfork` with the caller's `__dso_handle` (so that the handlers go when
    // their object is unloaded). Linked into libtally.so that stub lands at the far end of the
    // code, and calling it once at start-up maps another 64 KiB window of libtally.so's code
    // (the kernel's fault-around): the same call, made directly, keeps start-up inside the
    // windows malloc and free use anyway.
    #[cfg(target_env = "gnu")]
    {
        extern "C" {
            static __dso_handle: u8;
            fn __register_atfork(
                prepare: Option<unsafe extern "C" fn()>,
                parent: Option<unsafe extern "C" fn()>,
                child: Option<unsafe extern "C" fn()>,
                dso_handle: *const u8,
            ) -> i32;
        }
        // SAFETY: the handlers are `extern "C"` functions with the required signature that live
        // as long as the object holding this code, the one `__dso_handle` (defined by the C
        // runtime's crtbegin in every executable and shared object) names, so glibc drops them
        // if that object is unloaded; only its address is taken.
        unsafe {
            __register_atfork(
                Some(prepare),
                Some(parent),
                Some(child),
                core::ptr::addr_of!(__dso_handle),
            )
        };
    }
    #[cfg(not(target_env = "gnu"))]
    // SAFETY: the handlers are `extern "C"` functions with the required signature that live for
    // the whole process.
    unsafe {
        libc::pthread_atfork(Some(prepare), Some(parent), Some(child))
    };
}

/// Installs `handler` for signal `sig` (with `SA_RESTART`). `Err(errno)` on failure.
///
/// The handler returns to the interrupted code, so `sig` must be one that is sent, not one the
/// process raises by faulting (`SIGSEGV`, `SIGFPE`, ...: the faulting instruction would run
/// again forever); the caller chooses it (see [`realtime_signals`] and [`signal_by_name`]).
pub fn on_signal(sig: i32, handler: extern "C" fn(i32)) -> Result<(), i32> {
    // SAFETY: a zeroed sigaction is valid; we fill the handler and flags, and the handler lives
    // for the whole process.
    let rc = unsafe {
        let mut action: libc::sigaction = core::mem::zeroed();
        action.sa_sigaction = handler as usize;
        action.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut action.sa_mask);
        libc::sigaction(sig, &action, core::ptr::null_mut())
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(errno())
    }
}

/// The calling thread's kernel thread id (`gettid`).
#[inline]
pub fn tid() -> u32 {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::gettid() as u32 }
}

/// A handler for the fault signals (`SIGSEGV`, `SIGBUS`) with the `SA_SIGINFO` signature.
pub type FaultHandler = extern "C" fn(i32, *mut libc::siginfo_t, *mut core::ffi::c_void);

/// The fault signals [`on_faults`] handles.
pub const FAULT_SIGNALS: [i32; 2] = [libc::SIGSEGV, libc::SIGBUS];

/// The actions installed before [`on_faults`]'s handler, one per [`FAULT_SIGNALS`] entry.
/// Written once, by [`on_faults`], before its handler is installed; read by
/// [`pass_fault_on`] only after that.
struct Previous(core::cell::UnsafeCell<[libc::sigaction; 2]>);
// SAFETY: see the type's docs: one write before any reader can exist (the handler that reads it
// is installed after the write, and `FAULTS_SET` makes the write happen once).
unsafe impl Sync for Previous {}
// SAFETY: a zeroed sigaction is SIG_DFL with no flags, a valid value.
static PREVIOUS: Previous = Previous(core::cell::UnsafeCell::new(unsafe { core::mem::zeroed() }));
static FAULTS_SET: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

/// Installs `handler` for `SIGSEGV` and `SIGBUS` (`SA_SIGINFO`, `SA_ONSTACK` so that a thread
/// with an alternate signal stack uses it, `SA_NODEFER` left out: a second fault inside the
/// handler takes the default action), remembering the actions before it for
/// [`pass_fault_on`]. Once per process: a second call does nothing. `Err(errno)` on failure.
pub fn on_faults(handler: FaultHandler) -> Result<(), i32> {
    if FAULTS_SET.swap(true, core::sync::atomic::Ordering::AcqRel) {
        return Ok(());
    }
    for (i, &sig) in FAULT_SIGNALS.iter().enumerate() {
        // SAFETY: a zeroed sigaction is valid; we fill the handler, flags and mask. The previous
        // action is written to its slot of PREVIOUS before our handler can run (sigaction
        // returns the old action and installs the new one atomically, and our handler reads
        // only the slot of the signal it is running for, so a fault between the two signals'
        // installations finds its own slot written).
        let rc = unsafe {
            let mut action: libc::sigaction = core::mem::zeroed();
            action.sa_sigaction = handler as usize;
            action.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK | libc::SA_RESTART;
            libc::sigemptyset(&mut action.sa_mask);
            let slot = (*PREVIOUS.0.get()).as_mut_ptr().add(i);
            libc::sigaction(sig, &action, slot)
        };
        if rc != 0 {
            return Err(errno());
        }
    }
    Ok(())
}

/// The faulting address of a fault signal's `info`.
///
/// # Safety
/// `info` must be the `siginfo_t` the kernel passed to a `SIGSEGV` or `SIGBUS` handler.
#[inline]
pub unsafe fn fault_address(info: *const libc::siginfo_t) -> usize {
    // SAFETY: per the contract; `si_addr` is the field of fault signals.
    unsafe { (*info).si_addr() as usize }
}

/// Whether the signal of `info` is a fault the kernel raised (an access the hardware refused),
/// not one sent with `kill`, `raise` or `sigqueue` (whose `si_addr` means nothing).
///
/// # Safety
/// `info` must be the `siginfo_t` passed to a signal handler.
#[inline]
pub unsafe fn is_kernel_fault(info: *const libc::siginfo_t) -> bool {
    // SAFETY: per the contract.
    unsafe { (*info).si_code > 0 }
}

/// Whether the fault described by the handler's context `ctx` was a write: `Some(true)` write,
/// `Some(false)` read, `None` where the machine does not say (not x86-64).
///
/// # Safety
/// `ctx` must be the `ucontext_t` pointer a `SA_SIGINFO` handler of a kernel fault received.
#[inline]
pub unsafe fn fault_is_write(ctx: *const core::ffi::c_void) -> Option<bool> {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: per the contract; on x86-64 the kernel stores the page-fault error code in
        // `REG_ERR`, whose bit 1 is set for a write access.
        let err = unsafe { (*(ctx as *const libc::ucontext_t)).uc_mcontext.gregs[libc::REG_ERR as usize] };
        Some(err & 2 != 0)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = ctx;
        None
    }
}

/// The address of the instruction that faulted, from the handler's context `ctx` (0 where the
/// machine's context is not known: not x86-64).
///
/// # Safety
/// `ctx` must be the `ucontext_t` pointer a `SA_SIGINFO` handler received.
#[inline]
pub unsafe fn fault_pc(ctx: *const core::ffi::c_void) -> usize {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: per the contract.
        unsafe { (*(ctx as *const libc::ucontext_t)).uc_mcontext.gregs[libc::REG_RIP as usize] as usize }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = ctx;
        0
    }
}

/// Hands a fault signal on to whatever handled it before [`on_faults`]: that handler, or the
/// default action. A kernel fault under the default (or an ignored) action gets the default
/// action back and returns, so the faulting instruction runs again and the process dies of
/// the signal as it would have without Tally (with its core dump); a sent signal is raised
/// again, to be delivered when the handler returns.
///
/// # Safety
/// Only from a handler installed by [`on_faults`], with the arguments it received.
pub unsafe fn pass_fault_on(sig: i32, info: *mut libc::siginfo_t, ctx: *mut core::ffi::c_void) {
    let Some(i) = FAULT_SIGNALS.iter().position(|&s| s == sig) else {
        return;
    };
    // SAFETY: written before our handler was installed (see PREVIOUS).
    let prev = unsafe { &(*PREVIOUS.0.get())[i] };
    let action = prev.sa_sigaction;
    if action == libc::SIG_DFL || action == libc::SIG_IGN {
        // SAFETY: per the contract `info` is the handler's.
        let sent = unsafe { !is_kernel_fault(info) };
        if action == libc::SIG_IGN && sent {
            return;
        }
        die_of(sig, sent);
    } else if prev.sa_flags & libc::SA_SIGINFO != 0 {
        // SAFETY: the previous handler was installed with SA_SIGINFO, so it has this signature.
        let f: FaultHandler = unsafe { core::mem::transmute::<usize, FaultHandler>(action) };
        f(sig, info, ctx);
    } else {
        // SAFETY: a handler installed without SA_SIGINFO takes the signal number only.
        let f: extern "C" fn(i32) = unsafe { core::mem::transmute::<usize, extern "C" fn(i32)>(action) };
        f(sig);
    }
}

/// Whether a handler was installed for the fault signal `sig` before [`on_faults`]'s (not the
/// default action, not ignored): [`pass_fault_on`] then calls it.
pub fn has_previous_handler(sig: i32) -> bool {
    let Some(i) = FAULT_SIGNALS.iter().position(|&s| s == sig) else {
        return false;
    };
    // SAFETY: written before our handler was installed (see PREVIOUS); read only from it.
    let action = unsafe { (*PREVIOUS.0.get())[i].sa_sigaction };
    FAULTS_SET.load(core::sync::atomic::Ordering::Acquire)
        && action != libc::SIG_DFL
        && action != libc::SIG_IGN
}

/// From a fault handler: makes the process die of `sig` once the handler returns. The default
/// action comes back; a signal that was `sent` is raised again (it stays blocked, so pending,
/// until the handler returns), a kernel fault happens again when the faulting instruction runs
/// again.
pub fn die_of(sig: i32, sent: bool) {
    // SAFETY: a zeroed sigaction is SIG_DFL; raise has no preconditions.
    unsafe {
        let mut action: libc::sigaction = core::mem::zeroed();
        action.sa_sigaction = libc::SIG_DFL;
        libc::sigemptyset(&mut action.sa_mask);
        libc::sigaction(sig, &action, core::ptr::null_mut());
        if sent {
            libc::raise(sig);
        }
    }
}

/// A loaded ELF object (the executable, a shared library, the vDSO) as the dynamic loader knows
/// it.
#[derive(Clone, Copy, Debug)]
pub struct LoadedObject {
    /// The object's mapping: its first and past-its-last address.
    pub start: usize,
    /// See `start`.
    pub end: usize,
    /// Its load bias: run-time address minus the ELF virtual address.
    pub bias: usize,
    /// Its path as the loader has it, NUL-terminated; empty for the main executable.
    pub name: *const core::ffi::c_char,
    /// The address of its dynamic section (`Elf64_Dyn` entries: tag and value, 8 bytes each,
    /// ending with a null tag), 0 if it has none.
    pub dynamic: usize,
    /// Its unwind tables' search index (`PT_GNU_EH_FRAME`, `.eh_frame_hdr`), 0 if it has none.
    pub eh_frame: usize,
}

#[repr(C)]
struct DlFindObject {
    flags: u64,
    map_start: *mut core::ffi::c_void,
    map_end: *mut core::ffi::c_void,
    link_map: *mut LinkMap,
    eh_frame: *mut core::ffi::c_void,
    reserved: [u64; 7],
}

/// The public head of glibc's `struct link_map` (`<link.h>`).
#[repr(C)]
struct LinkMap {
    l_addr: usize,
    l_name: *const core::ffi::c_char,
    l_ld: usize,
}

extern "C" {
    /// glibc 2.35+: the object containing `pc`, without the loader lock and without allocating
    /// (async-signal-safe).
    fn _dl_find_object(pc: *mut core::ffi::c_void, result: *mut DlFindObject) -> core::ffi::c_int;
}

/// The loaded object whose mapping holds `pc`, if any. No lock, no allocation: callable from a
/// signal handler.
pub fn loaded_object(pc: usize) -> Option<LoadedObject> {
    let mut found = DlFindObject {
        flags: 0,
        map_start: core::ptr::null_mut(),
        map_end: core::ptr::null_mut(),
        link_map: core::ptr::null_mut(),
        eh_frame: core::ptr::null_mut(),
        reserved: [0; 7],
    };
    // SAFETY: `found` is a valid result buffer; _dl_find_object only reads loader state.
    if unsafe { _dl_find_object(pc as *mut core::ffi::c_void, &mut found) } != 0 || found.link_map.is_null() {
        return None;
    }
    // SAFETY: a link map the loader returned for a loaded object stays valid while the object
    // is loaded, which it is while code of it runs or is on a stack being reported.
    let map = unsafe { &*found.link_map };
    Some(LoadedObject {
        start: found.map_start as usize,
        end: found.map_end as usize,
        bias: map.l_addr,
        name: map.l_name,
        dynamic: map.l_ld,
        eh_frame: found.eh_frame as usize,
    })
}

/// An address of code in each object that stays loaded as long as this code does: this module
/// itself, the main executable (its entry point; never unloaded) and the C library (a function
/// this module calls, through the binding the loader gave it: the loader keeps an object that
/// provides a binding loaded while the object bound to it is). Some may be the same object.
pub fn resident_code() -> [usize; 3] {
    // SAFETY: getauxval has no preconditions.
    let entry = unsafe { libc::getauxval(libc::AT_ENTRY) } as usize;
    [
        resident_code as *const () as usize,
        entry,
        libc::getpid as *const () as usize,
    ]
}

/// Writes the path of the running executable into `buf` (`/proc/self/exe`); returns its length,
/// 0 if it cannot be read (or does not fit).
pub fn executable_path(buf: &mut [u8]) -> usize {
    // SAFETY: readlink writes at most `buf.len()` bytes into `buf`.
    let n = unsafe { libc::readlink(c"/proc/self/exe".as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if n <= 0 || n as usize >= buf.len() {
        0
    } else {
        n as usize
    }
}

/// The real-time signals applications may use, `SIGRTMIN..=SIGRTMAX` (the C library keeps the
/// first few of the kernel's for itself, so `SIGRTMIN` is 34 with glibc, not 32).
pub fn realtime_signals() -> (i32, i32) {
    (libc::SIGRTMIN(), libc::SIGRTMAX())
}

/// Signal names, as `kill -l` prints them without `SIG`, indexed by number.
const SIGNAL_NAMES: [&str; 32] = [
    "", "HUP", "INT", "QUIT", "ILL", "TRAP", "ABRT", "BUS", "FPE", "KILL", "USR1", "SEGV", "USR2", "PIPE",
    "ALRM", "TERM", "STKFLT", "CHLD", "CONT", "STOP", "TSTP", "TTIN", "TTOU", "URG", "XCPU", "XFSZ",
    "VTALRM", "PROF", "WINCH", "IO", "PWR", "SYS",
];
const _: () = assert!(libc::SIGSYS == 31 && libc::SIGUSR2 == 12 && libc::SIGSEGV == 11);

/// The number of the signal named `name`: `SIGUSR2` or `USR2`, `SIGRTMIN+3`, `SIGRTMAX-1`,
/// `SIGRTMIN`, letters in either case (as the shell's `kill -s` takes them). `None` for a name
/// no signal has. A number is not a name: the caller parses those.
pub fn signal_by_name(name: &[u8]) -> Option<i32> {
    let mut upper = [0u8; 16];
    if name.len() > upper.len() {
        return None;
    }
    for (u, &b) in upper.iter_mut().zip(name) {
        *u = b.to_ascii_uppercase();
    }
    let upper = &upper[..name.len()];
    let bare = upper.strip_prefix(b"SIG").unwrap_or(upper);
    if let Some(i) = SIGNAL_NAMES
        .iter()
        .position(|n| !n.is_empty() && n.as_bytes() == bare)
    {
        return Some(i as i32);
    }
    let (min, max) = realtime_signals();
    let (base, rest, sign) = if let Some(rest) = bare.strip_prefix(b"RTMIN") {
        (min, rest, 1)
    } else if let Some(rest) = bare.strip_prefix(b"RTMAX") {
        (max, rest, -1)
    } else {
        return None;
    };
    let offset = match rest {
        [] => 0,
        [op, digits @ ..] if (*op == b'+' && sign == 1) || (*op == b'-' && sign == -1) => {
            if digits.is_empty() || digits.len() > 2 || !digits.iter().all(u8::is_ascii_digit) {
                return None;
            }
            digits.iter().fold(0, |n, &d| n * 10 + i32::from(d - b'0'))
        }
        _ => return None,
    };
    let sig = base + sign * offset;
    (min..=max).contains(&sig).then_some(sig)
}

/// A signal's name for messages: `SIGUSR2`, `SIGRTMIN+3`, or `signal 99` for a number no signal
/// has. Formatting never allocates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SignalName(pub i32);

impl core::fmt::Display for SignalName {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let sig = self.0;
        let (min, max) = realtime_signals();
        match SIGNAL_NAMES.get(sig as usize) {
            Some(name) if sig > 0 && !name.is_empty() => write!(f, "SIG{name}"),
            _ if sig == min => f.write_str("SIGRTMIN"),
            _ if sig > min && sig <= max => write!(f, "SIGRTMIN+{}", sig - min),
            _ => write!(f, "signal {sig}"),
        }
    }
}

/// 64 unpredictable bits, for names no other process can guess: from `getrandom` (without
/// blocking), or, where that fails (a kernel before 3.17, a seccomp filter, entropy not yet
/// gathered at boot), from the 16 random bytes the kernel gives every process (`AT_RANDOM`,
/// readable only by the process and its owner) mixed with a counter and the clock. Never
/// allocates.
#[inline]
pub fn random_u64() -> u64 {
    let mut bytes = [0u8; 8];
    // SAFETY: the buffer is valid for writes of its length.
    let n = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), libc::GRND_NONBLOCK) };
    if n == bytes.len() as isize {
        return u64::from_ne_bytes(bytes);
    }
    static CALLS: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);
    let calls = CALLS.fetch_add(1, core::sync::atomic::Ordering::Relaxed);
    // SAFETY: getauxval has no preconditions; a non-zero AT_RANDOM is the address of 16 bytes
    // the kernel placed on the initial stack, which stay mapped for the life of the process.
    let seed = unsafe {
        let p = libc::getauxval(libc::AT_RANDOM) as *const [u8; 16];
        if p.is_null() {
            [0; 16]
        } else {
            core::ptr::read_unaligned(p)
        }
    };
    let (lo, hi) = seed.split_at(8);
    let mut x = u64::from_ne_bytes(lo.try_into().unwrap_or([0; 8]))
        ^ u64::from_ne_bytes(hi.try_into().unwrap_or([0; 8])).rotate_left(29)
        ^ crate::time::now_ns()
        ^ calls.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    // splitmix64's finalizer: every input bit reaches every output bit.
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_errno_and_counts() {
        assert!(getenv(c"TALLY_PAL_SURELY_UNSET_VARIABLE").is_none());
        assert!(getenv(c"PATH").is_some());
        set_errno(libc::EINVAL);
        assert_eq!(errno(), libc::EINVAL);
        assert!(cpu_count() >= 1);
        assert_eq!(kernel_page_size(), crate::memory::PAGE);
        // SAFETY: sysconf has no preconditions.
        assert_eq!(kernel_page_size(), unsafe { libc::sysconf(libc::_SC_PAGESIZE) }
            as usize);
        assert_eq!(pid(), std::process::id());
        // A test binary is the main executable: no range of its own.
        assert_eq!(own_code_range(), None);
    }

    #[test]
    fn the_environment_reads_as_the_c_librarys_getenv() {
        use std::os::unix::ffi::OsStrExt;
        let mut seen = 0;
        for (name, _) in std::env::vars_os() {
            let mut bytes = name.as_bytes().to_vec();
            bytes.push(0);
            let name = CStr::from_bytes_with_nul(&bytes).expect("a name without NUL");
            // SAFETY: `name` is NUL-terminated; getenv returns null or the value's string.
            let theirs = unsafe { libc::getenv(name.as_ptr()) };
            assert!(!theirs.is_null());
            // SAFETY: a non-null getenv result is a NUL-terminated string.
            let theirs = unsafe { CStr::from_ptr(theirs) }.to_bytes();
            assert_eq!(getenv(name), Some(theirs), "{name:?}");
            // A name that is a proper prefix of a variable's is not that variable.
            if bytes.len() > 2 {
                let mut prefix = bytes[..bytes.len() - 2].to_vec();
                prefix.push(0);
                let prefix = CStr::from_bytes_with_nul(&prefix).expect("a name without NUL");
                // SAFETY: as above.
                let theirs = unsafe { libc::getenv(prefix.as_ptr()) };
                // SAFETY: as above.
                let theirs = (!theirs.is_null()).then(|| unsafe { CStr::from_ptr(theirs) }.to_bytes());
                assert_eq!(getenv(prefix), theirs, "{prefix:?}");
            }
            seen += 1;
        }
        assert!(seen > 0, "an empty environment tests nothing");
    }

    #[test]
    fn the_cpu_count_is_the_c_librarys() {
        // SAFETY: cpu_set_t is plain data; zeroed is a valid empty set.
        let mut set: libc::cpu_set_t = unsafe { core::mem::zeroed() };
        // SAFETY: the pointer and size describe `set`.
        let rc = unsafe { libc::sched_getaffinity(0, core::mem::size_of::<libc::cpu_set_t>(), &mut set) };
        assert_eq!(rc, 0);
        // SAFETY: `set` was filled by the C library.
        assert_eq!(cpu_count(), unsafe { libc::CPU_COUNT(&set) } as usize);
    }

    #[test]
    fn signal_names_both_ways() {
        let (min, max) = realtime_signals();
        assert!(min > 31 && max >= min + 8, "{min}..{max}");
        for (name, sig) in [
            (&b"SIGUSR2"[..], libc::SIGUSR2),
            (b"USR2", libc::SIGUSR2),
            (b"usr1", libc::SIGUSR1),
            (b"SIGHUP", libc::SIGHUP),
            (b"SEGV", libc::SIGSEGV),
            (b"SIGRTMIN", min),
            (b"SIGRTMIN+3", min + 3),
            (b"RTMIN+3", min + 3),
            (b"SIGRTMAX", max),
            (b"SIGRTMAX-2", max - 2),
        ] {
            assert_eq!(signal_by_name(name), Some(sig), "{name:?}");
        }
        for name in [
            &b"SIGFOO"[..],
            b"",
            b"SIG",
            b"12",
            b"SIGRTMIN+",
            b"SIGRTMIN-1",
            b"SIGRTMAX+1",
            b"SIGRTMIN+99",
            b"SIGRTMIN+3x",
            b"SIGUSR2 ",
            b"SIGVERYVERYLONGNAME",
        ] {
            assert_eq!(signal_by_name(name), None, "{name:?}");
        }
        let shown = |sig| std::format!("{}", SignalName(sig));
        assert_eq!(shown(libc::SIGSEGV), "SIGSEGV");
        assert_eq!(shown(min + 3), "SIGRTMIN+3");
        assert_eq!(shown(min), "SIGRTMIN");
        assert_eq!(shown(99), "signal 99");
        assert_eq!(shown(0), "signal 0");
        assert_eq!(shown(-4), "signal -4");
    }

    #[test]
    fn random_bits_differ() {
        let a = random_u64();
        let b = random_u64();
        assert_ne!(a, b);
    }
}
