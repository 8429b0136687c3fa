//! Threads: the static-TLS thread block, creating a thread, thread-exit hooks, yielding,
//! futexes and the process-wide memory barrier.

use core::ffi::c_void;
use core::sync::atomic::AtomicU32;

/// Bytes of the thread block (see [`thread_block`]): the thread cache's bins, 32 bytes for each
/// of its 58 classes, its other fields and the thread's events (asserted where they are laid
/// out). The `.size` and `.zero` of the block below say the same number.
pub const THREAD_BLOCK_BYTES: usize = 2112;

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
    ".size tally_thread_block, 2112",
    "tally_thread_block:",
    ".zero 2112",
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
    // `nomem`: neither word changes while the thread lives, so the compiler may reuse the
    // address across the caller's stores (`free` computes it once for `ChunkSeen` and its bin).
    unsafe {
        core::arch::asm!(
            "mov {p}, qword ptr fs:[0]",
            "add {p}, qword ptr [rip + tally_thread_block@GOTTPOFF]",
            p = out(reg) p,
            options(pure, nomem, nostack),
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

/// Starts a detached thread running `body`, with every signal blocked but those a fault raises
/// (`SIGSEGV`, `SIGBUS`, `SIGFPE`, `SIGILL`, `SIGTRAP`, `SIGSYS`): a signal sent to the process
/// then goes to one of the program's threads, never to one of Tally's (a program that blocks a
/// signal in its threads to take it with `sigwait` or `signalfd` still gets it). Returns false
/// if it could not be created.
#[inline]
pub fn spawn(body: extern "C" fn(*mut c_void) -> *mut c_void) -> bool {
    let mut thread: libc::pthread_t = 0;
    // SAFETY: sigset_t is plain data that sigfillset initializes; the new thread inherits the
    // mask in force when it is created, and the caller's own mask is put back right after.
    let rc = unsafe {
        let mut blocked: libc::sigset_t = core::mem::zeroed();
        let mut old: libc::sigset_t = core::mem::zeroed();
        libc::sigfillset(&mut blocked);
        for sig in [
            libc::SIGSEGV,
            libc::SIGBUS,
            libc::SIGFPE,
            libc::SIGILL,
            libc::SIGTRAP,
            libc::SIGSYS,
        ] {
            libc::sigdelset(&mut blocked, sig);
        }
        libc::pthread_sigmask(libc::SIG_SETMASK, &blocked, &mut old);
        // `thread` is a valid out-pointer; `body` has the signature pthread expects and lives
        // for the whole process.
        let rc = libc::pthread_create(&mut thread, core::ptr::null(), body, core::ptr::null_mut());
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, core::ptr::null_mut());
        rc
    };
    if rc != 0 {
        return false;
    }
    // SAFETY: `thread` was just created and is joined by no one.
    unsafe { libc::pthread_detach(thread) };
    true
}

/// A key whose destructor runs at thread exit for the threads that armed it.
pub type ExitKey = libc::pthread_key_t;

/// Creates a thread-specific key whose destructor runs at thread exit for threads that set it
/// (`pthread_key_create`, which does not allocate in glibc).
#[inline]
pub fn exit_key(destructor: unsafe extern "C" fn(*mut c_void)) -> Option<ExitKey> {
    let mut key: libc::pthread_key_t = 0;
    // SAFETY: `key` is a valid out-pointer; the destructor has the required signature.
    let rc = unsafe { libc::pthread_key_create(&mut key, Some(destructor)) };
    (rc == 0).then_some(key)
}

/// Arms the thread-exit destructor of `key` for the calling thread, with `value` its argument.
///
/// # Safety
/// `key` must come from [`exit_key`], and `value` must be what that key's destructor can take
/// when this thread exits.
#[inline]
pub unsafe fn arm_exit(key: ExitKey, value: *mut c_void) {
    // SAFETY: per the contract.
    unsafe { libc::pthread_setspecific(key, value) };
}

/// Lets another thread run.
#[inline]
pub fn yield_now() {
    // SAFETY: sched_yield has no preconditions.
    unsafe { libc::sched_yield() };
}

/// Sleeps while `*word == expected` (or until woken, or spuriously).
#[inline]
pub fn futex_wait(word: &AtomicU32, expected: u32) {
    // SAFETY: FUTEX_WAIT reads the aligned u32 behind `word`, which the reference keeps alive.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG,
            expected,
            core::ptr::null::<libc::timespec>(),
        );
    }
}

/// Wakes one thread sleeping on `word`.
#[inline]
pub fn futex_wake_one(word: &AtomicU32) {
    // SAFETY: FUTEX_WAKE only uses the address as a key.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG,
            1,
        );
    }
}

/// `membarrier(2)` commands (`linux/membarrier.h`).
const MEMBARRIER_CMD_GLOBAL: libc::c_int = 1;
const MEMBARRIER_CMD_PRIVATE_EXPEDITED: libc::c_int = 8;
const MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED: libc::c_int = 16;

fn membarrier(cmd: libc::c_int) -> bool {
    // SAFETY: membarrier takes no pointers; an unknown command fails with EINVAL.
    unsafe { libc::syscall(libc::SYS_membarrier, cmd, 0, 0) == 0 }
}

/// A full memory barrier in every thread of the process that runs now, as if each had
/// executed one at some point between this call's start and its return (`membarrier(2)`):
/// the expensive half of an asymmetric fence, whose other half, in the threads, is only a
/// compiler fence. The expedited form (interrupts to the CPUs running the process's threads)
/// is registered at its first use; where it is refused, the global form waits for every CPU to
/// pass a quiescent state (milliseconds). Returns false when neither is available (Linux before
/// 4.3, or a seccomp filter that refuses the call): then no such barrier has happened.
pub fn barrier_all_threads() -> bool {
    (expedited_registered() && membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED))
        || membarrier(MEMBARRIER_CMD_GLOBAL)
}

/// Whether the process is registered for the expedited barrier: registers at the first call
/// and remembers the answer (0: not asked yet, 1: registered, 2: refused), so that later
/// barriers make one system call, not two. The registration belongs to the address space: a
/// child of `fork` inherits it with this static, and `exec` clears both.
fn expedited_registered() -> bool {
    use core::sync::atomic::{AtomicU8, Ordering};
    static REGISTERED: AtomicU8 = AtomicU8::new(0);
    match REGISTERED.load(Ordering::Relaxed) {
        1 => true,
        2 => false,
        _ => {
            let ok = membarrier(MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED);
            REGISTERED.store(if ok { 1 } else { 2 }, Ordering::Relaxed);
            ok
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thread_block_is_per_thread_aligned_and_starts_zeroed() {
        let mine = thread_block() as usize;
        assert_eq!(mine % 64, 0);
        // SAFETY: the block is this thread's and THREAD_BLOCK_BYTES long.
        unsafe { *thread_block().add(THREAD_BLOCK_BYTES - 1) = 9 };
        let (theirs, last) = std::thread::spawn(|| {
            // SAFETY: as above, in the new thread.
            (thread_block() as usize, unsafe {
                *thread_block().add(THREAD_BLOCK_BYTES - 1)
            })
        })
        .join()
        .unwrap();
        assert_ne!(mine, theirs);
        assert_eq!(last, 0);
    }
}
