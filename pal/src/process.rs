//! The process: environment, CPUs, page size, pid, `errno`, `fork` and signal hooks, and where
//! Tally's own code is mapped.

use core::ffi::{c_char, CStr};

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

/// 64 random bits from the kernel (`getrandom`, not blocking), without allocating. If the
/// kernel's pool is not ready yet (early boot), a mix of the clock, the pid and a stack
/// address: unpredictable enough to tell Tally's marks from program data, not a secret.
pub fn random_u64() -> u64 {
    let mut bytes = [0u8; 8];
    // SAFETY: the buffer is 8 writable bytes on this stack frame.
    let n = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), 8, libc::GRND_NONBLOCK) };
    if n == 8 {
        return u64::from_ne_bytes(bytes);
    }
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec to write.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    let mut x = (ts.tv_nsec as u64) ^ ((ts.tv_sec as u64) << 30) ^ (u64::from(pid()) << 48);
    x ^= core::ptr::addr_of!(ts) as u64;
    // splitmix64's finalizer, so that nearby inputs give unrelated outputs.
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
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

/// The process id.
pub fn pid() -> u32 {
    // SAFETY: getpid has no preconditions.
    unsafe { libc::getpid() as u32 }
}

/// The calling thread's `errno`.
pub fn errno() -> i32 {
    // SAFETY: __errno_location returns this thread's errno slot.
    unsafe { *libc::__errno_location() }
}

/// Sets the calling thread's `errno`.
pub fn set_errno(value: i32) {
    // SAFETY: __errno_location always returns the calling thread's errno slot.
    unsafe { *libc::__errno_location() = value };
}

/// Registers fork handlers (`pthread_atfork`): `prepare` runs in the forking thread before the
/// fork, `parent` and `child` after it in the parent and in the child's only thread.
pub fn on_fork(
    prepare: unsafe extern "C" fn(),
    parent: unsafe extern "C" fn(),
    child: unsafe extern "C" fn(),
) {
    // SAFETY: the handlers are `extern "C"` functions with the required signature that live for
    // the whole process.
    unsafe { libc::pthread_atfork(Some(prepare), Some(parent), Some(child)) };
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
        assert_ne!(random_u64(), random_u64());
        assert_eq!(kernel_page_size(), crate::memory::PAGE);
        assert_eq!(pid(), std::process::id());
        // A test binary is the main executable: no range of its own.
        assert_eq!(own_code_range(), None);
    }
}
