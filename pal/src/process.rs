//! The process: environment, CPUs, page size, pid, `errno`, `fork` and signal hooks, signal
//! names, random bits, and where Tally's own code is mapped.

use core::ffi::{c_char, CStr};

/// Reads an environment variable without allocating; set-uid programs see nothing
/// (`secure_getenv`). The bytes live as long as the environment is not modified, which Tally
/// assumes for the short time it parses them.
#[inline]
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
#[inline]
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
#[inline]
pub fn kernel_page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_PAGESIZE) as usize }
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
        assert_eq!(pid(), std::process::id());
        // A test binary is the main executable: no range of its own.
        assert_eq!(own_code_range(), None);
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
