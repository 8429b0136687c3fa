//! Process-wide initialization: lazy, on the first call that misses, and allocation-free.
//!
//! The first thread to get here reads the options (`MALLOC_CONF`, then `TALLY_CONF`; set-uid
//! programs ignore both), sizes the arena table, hands each part its settings, installs the
//! `fork` handlers and, last, starts the background thread (creating a thread allocates) and
//! whatever a layer above asked to run then ([`on_ready`]: the `prof_http` server).
//! Other threads wait; a call made from inside initialization itself (glibc's `pthread_atfork`
//! may allocate) is served with the default options instead of waiting.
//!
//! Invariant: [`options`] returns the defaults until `GLOBAL` is `READY`, and the options read
//! from the environment forever after; they are written once, before `READY` is published.

use core::cell::{Cell, UnsafeCell};
use core::ffi::CStr;
use core::sync::atomic::{AtomicPtr, AtomicU8, Ordering};

use tally_pal::{self as pal, PAGE};

use crate::options::{self, Options};
use crate::{arena, bigcache, decay, fork, freed, guard, prof_hooks, tcache, thread_event};

std::thread_local! {
    /// Whether this thread is running process-wide initialization.
    static IN_GLOBAL_INIT: Cell<bool> = const { Cell::new(false) };
}

const GLOBAL_NEW: u8 = 0;
const GLOBAL_RUNNING: u8 = 1;
const GLOBAL_READY: u8 = 2;

static GLOBAL: AtomicU8 = AtomicU8::new(GLOBAL_NEW);

/// The options, written once by the initializing thread before `GLOBAL` becomes ready.
struct OptionsCell(UnsafeCell<Options>);
// SAFETY: written only by the one thread that wins the GLOBAL_NEW -> GLOBAL_RUNNING exchange,
// before the Release store of GLOBAL_READY; read only after an Acquire load sees it.
unsafe impl Sync for OptionsCell {}
static OPTIONS: OptionsCell = OptionsCell(UnsafeCell::new(Options::DEFAULT));

/// What runs once initialization is complete, in the thread that did it (null: nothing): set by
/// a layer above this one ([`on_ready`]).
static ON_READY: AtomicPtr<()> = AtomicPtr::new(core::ptr::null_mut());

/// Has `f` run once initialization is complete: at its end (it starts a thread, which
/// allocates, so it comes after the background thread's start), or now if it is complete
/// already. For the `prof_http` server, whose thread starts with the allocator, not before: a
/// library constructor that initialized the allocator itself would read the options and install
/// the fault handlers ahead of the program's own constructors. `f` may run twice (here and at
/// the end of an initialization running meanwhile in another thread): it must be idempotent.
pub fn on_ready(f: fn()) {
    ON_READY.store(f as *mut (), Ordering::Release);
    if GLOBAL.load(Ordering::Acquire) == GLOBAL_READY {
        f();
    }
}

crate::hot::hot_data! {
    /// The default options, which initialization starts from (`hot.rs`: read in every program).
    fn default_options() -> &'static Options = Options::DEFAULT;
}
crate::hot::hot_data! {
    /// `MALLOC_CONF`, NUL-terminated (a C string literal would be with the compiler's strings,
    /// outside the data every program reads, `hot.rs`).
    fn malloc_conf_name() -> &'static [u8; 12] = *b"MALLOC_CONF\0";
}
crate::hot::hot_data! {
    /// `TALLY_CONF`, NUL-terminated (as [`malloc_conf_name`]).
    fn tally_conf_name() -> &'static [u8; 11] = *b"TALLY_CONF\0";
}

/// The value of the environment variable `name` (NUL-terminated bytes), unless the program is
/// set-uid or set-gid.
fn getenv(name: &'static [u8]) -> Option<&'static [u8]> {
    // The names above end with their only NUL.
    debug_assert!(name.iter().position(|&b| b == 0) == Some(name.len() - 1));
    // SAFETY: `name` ends with its only NUL byte.
    pal::getenv(unsafe { CStr::from_bytes_with_nul_unchecked(name) })
}

/// The options in force (defaults until initialization has read the environment), in place:
/// never copied, since they hold three text buffers (about 850 bytes) and the slow paths of
/// large blocks read a flag of them at every `malloc` and `free` (a copy each was 14% of the
/// time of 64 blocks of 256 KiB allocated and freed in a loop); `mallctl("opt.*")` hands out
/// C strings inside them, which live as long as the process. Call after [`ensure_global`] to
/// have the environment's.
pub fn options() -> &'static Options {
    if GLOBAL.load(Ordering::Acquire) == GLOBAL_READY {
        // SAFETY: see OptionsCell: never written again once READY is seen.
        unsafe { &*OPTIONS.0.get() }
    } else {
        default_options()
    }
}

/// Makes sure process-wide initialization has run (or is running in this thread).
#[inline]
pub fn ensure_global() {
    if GLOBAL.load(Ordering::Acquire) != GLOBAL_READY {
        init_global();
    }
}

#[cold]
#[inline(never)]
#[link_section = ".text.hot.tally"]
fn init_global() {
    match GLOBAL.compare_exchange(GLOBAL_NEW, GLOBAL_RUNNING, Ordering::Acquire, Ordering::Acquire) {
        Ok(_) => {}
        Err(GLOBAL_READY) => return,
        Err(_) => {
            // A call from inside our own initialization (pthread_atfork may allocate) goes on
            // with the defaults; other threads wait.
            if IN_GLOBAL_INIT.get() {
                return;
            }
            while GLOBAL.load(Ordering::Acquire) != GLOBAL_READY {
                pal::thread::yield_now();
            }
            return;
        }
    }
    IN_GLOBAL_INIT.set(true);
    // Draw the free mark's key now, unless a chunk made before this did.
    freed::key();
    if pal::kernel_page_size() != PAGE {
        pal::fatal(format_args!(
            "tally: the kernel's page size is {}, Tally needs {PAGE}\n",
            pal::kernel_page_size()
        ));
    }
    let mut opts = *default_options();
    let sources = [
        ("MALLOC_CONF", getenv(malloc_conf_name()).unwrap_or(b"")),
        ("TALLY_CONF", getenv(tally_conf_name()).unwrap_or(b"")),
    ];
    let errors = options::parse_all(&sources, &mut opts, &mut |line| pal::write_stderr(line));
    if errors > 0 && opts.abort_conf {
        pal::fatal(format_args!(
            "tally: aborting on configuration errors (abort_conf:true)\n"
        ));
    }
    // Before anything is mapped for the program: chunks and tables follow it from now on.
    crate::thp::configure(opts.thp);
    // One arena per CPU (jemalloc makes four): at most as many threads run at once as there are
    // CPUs, and behind the thread caches an arena's locks are taken once per batch. Free pages
    // of an arena serve only its threads, so each arena more is one more pool of idle pages:
    // with four per CPU the suite's `generations` (threads handing blocks to the next wave)
    // peaked at 88 MiB, with one 67 (glibc 71), and no workload of the suite ran slower
    // (docs/benchmarks.md).
    let narenas = if opts.narenas == 0 {
        pal::cpu_count()
    } else {
        opts.narenas
    };
    arena::set_arena_count(narenas);
    opts.narenas = arena::arena_count();
    if opts.stats_print {
        // Programs such as GNU coreutils close stderr before exiting; keep our own copy for the
        // report printed at exit.
        pal::stderr::keep_stderr();
    }
    decay::configure(&opts);
    tcache::configure(opts.tcache_max);
    bigcache::configure(opts.tcache_max);
    prof_hooks::configure(&opts);
    guard::configure(&opts);
    prof_hooks::configure_dealloc(&opts, guard::bounds());
    if guard::is_on() {
        thread_event::run_out_now();
    }
    // SAFETY: only this thread writes OPTIONS, before publishing GLOBAL_READY.
    unsafe { *OPTIONS.0.get() = opts };
    fork::install();
    GLOBAL.store(GLOBAL_READY, Ordering::Release);
    IN_GLOBAL_INIT.set(false);
    // Creating a thread allocates, so it comes last, with initialization complete.
    decay::start_background_thread();
    let ready = ON_READY.load(Ordering::Acquire);
    if !ready.is_null() {
        // SAFETY: ON_READY holds only null or a `fn()` stored by `on_ready`.
        let f: fn() = unsafe { core::mem::transmute::<*mut (), fn()>(ready) };
        f();
    }
}
