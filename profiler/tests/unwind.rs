//! Both unwinders see a 20-deep recursion, and agree with each other where frame pointers exist.

use tally_profiler::unwind::{FramePointers, Libgcc, Unwinder};
use tally_profiler::MAX_FRAMES;

#[inline(never)]
fn recurse(n: usize, f: &mut dyn FnMut()) {
    if n == 0 {
        f();
    } else {
        recurse(n - 1, f);
    }
    std::hint::black_box(n);
}

/// Held by tests that count the walker's rule computations (`MISSES` is process-wide) and by
/// tests that walk from several threads, so that one test's walks are not counted in another's.
static COUNTING: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn counting() -> std::sync::MutexGuard<'static, ()> {
    COUNTING.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[test]
fn libgcc_sees_the_whole_recursion() {
    let here = recurse as fn(usize, &mut dyn FnMut()) as usize;
    let mut frames = [0usize; MAX_FRAMES];
    let mut n = 0;
    recurse(20, &mut || n = Libgcc.capture(&mut frames, 0));
    assert!(n >= 21, "only {n} frames");
    // At least 20 return addresses land in `recurse` (within its first few hundred bytes).
    let in_recurse = frames[..n]
        .iter()
        .filter(|&&f| f > here && f < here + 512)
        .count();
    assert!(
        in_recurse >= 20,
        "{in_recurse} frames in recurse: {:x?}",
        &frames[..n]
    );
    // Skipping drops frames from the top.
    let mut skipped = [0usize; MAX_FRAMES];
    let mut m = 0;
    recurse(20, &mut || m = Libgcc.capture(&mut skipped, 3));
    assert_eq!(m + 3, n);
    // Inside the recursion the frames are the same (further up, the two calls of `recurse`
    // come from different lines of this test).
    assert_eq!(&skipped[1..14], &frames[4..17]);
}

#[test]
fn frame_pointers_agree_with_libgcc_when_present() {
    let mut fp = [0usize; MAX_FRAMES];
    let mut gcc = [0usize; MAX_FRAMES];
    let (mut nf, mut ng) = (0, 0);
    recurse(20, &mut || {
        nf = FramePointers.capture(&mut fp, 0);
        ng = Libgcc.capture(&mut gcc, 0);
    });
    assert!(nf <= MAX_FRAMES);
    if nf < 20 {
        eprintln!("note: frame-pointer walk found {nf} frames: this build omits frame pointers");
        return;
    }
    // The first frame differs (two call sites in the closure); the callers above agree.
    let k = nf.min(ng).min(22);
    assert_eq!(&fp[1..k], &gcc[1..k]);
}

#[test]
fn captures_on_other_threads() {
    std::thread::spawn(|| {
        let mut frames = [0usize; MAX_FRAMES];
        let mut n = 0;
        recurse(30, &mut || n = Libgcc.capture(&mut frames, 0));
        assert!(n >= 31);
        recurse(30, &mut || n = FramePointers.capture(&mut frames, 0));
        assert!(n <= MAX_FRAMES);
    })
    .join()
    .unwrap();
}

#[test]
fn deep_stacks_stop_at_the_buffer() {
    let mut frames = [0usize; MAX_FRAMES];
    let mut n = 0;
    recurse(300, &mut || n = Libgcc.capture(&mut frames, 0));
    assert_eq!(n, MAX_FRAMES);
    recurse(300, &mut || n = FramePointers.capture(&mut frames, 0));
    assert!(n <= MAX_FRAMES);
}

/// The caching DWARF walker returns exactly libgcc's frames: through this test's Rust frames,
/// libtest's and std's, into glibc's thread start, on first use (rules computed) and again (from
/// the table); and with `skip`.
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
#[test]
fn cfi_walker_matches_libgcc() {
    use tally_profiler::cfi::{Cfi, FALLBACKS, MISSES, OBJECT_LOOKUPS};
    let fallbacks = FALLBACKS.load(std::sync::atomic::Ordering::Relaxed);
    for depth in [0usize, 3, 20, 60] {
        for round in 0..3 {
            let mut gcc = [0usize; MAX_FRAMES];
            let mut cfi = [0usize; MAX_FRAMES];
            let (mut ng, mut nc) = (0, 0);
            recurse(depth, &mut || {
                ng = Libgcc.capture(&mut gcc, 0);
                nc = Cfi.capture(&mut cfi, 0);
            });
            assert!(nc >= depth + 3, "depth {depth}: only {nc} frames");
            // The first frame is the closure's two call sites; every caller above agrees, to the
            // end of the stack.
            assert_eq!(
                nc,
                ng,
                "depth {depth} round {round}: {:x?} vs {:x?}",
                &cfi[..nc],
                &gcc[..ng]
            );
            assert_eq!(&cfi[1..nc], &gcc[1..ng], "depth {depth} round {round}");
            let mut skipped = [0usize; MAX_FRAMES];
            let mut ns = 0;
            recurse(depth, &mut || ns = Cfi.capture(&mut skipped, 2));
            assert_eq!(ns + 2, nc);
        }
    }
    // Repeated walks over the same frames come from the table: after a first hundred (which
    // compute the rules of this loop's new call sites, and of any frame whose rule another
    // test's writer kept out of the table earlier), a hundred more compute nothing. (The trip
    // count is opaque so that the compiler makes no second copy of the loop, whose call sites
    // would be new addresses.)
    // And every frame is in an object that cannot be unloaded (this executable, the C library),
    // so no walk asks the loader which object a frame is in.
    #[inline(never)]
    fn hundred_walks() -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        let mut frames = [0usize; MAX_FRAMES];
        let (before, lookups) = (MISSES.load(Relaxed), OBJECT_LOOKUPS.load(Relaxed));
        for _ in 0..std::hint::black_box(100) {
            Cfi.capture(&mut frames, 0);
        }
        (
            MISSES.load(Relaxed) - before,
            OBJECT_LOOKUPS.load(Relaxed) - lookups,
        )
    }
    let _alone = counting();
    let (mut computed, mut looked_up) = (u64::MAX, u64::MAX);
    recurse(20, &mut || {
        for _ in 0..std::hint::black_box(2) {
            (computed, looked_up) = hundred_walks();
        }
    });
    assert_eq!(computed, 0, "rules computed again for 100 walks of one stack");
    assert_eq!(
        looked_up, 0,
        "objects looked up in 100 walks through the executable and libc"
    );
    // All of it was the walker's own work, not libgcc's.
    assert_eq!(FALLBACKS.load(std::sync::atomic::Ordering::Relaxed), fallbacks);
}

/// Two callers of `f` with frames of the same size, for walks from the same depth through
/// either.
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
#[inline(never)]
fn left(f: &mut dyn FnMut()) {
    f();
    std::hint::black_box(1);
}

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
#[inline(never)]
fn right(f: &mut dyn FnMut()) {
    f();
    std::hint::black_box(2);
}

/// Walks that repeat a stack take their steps from the walker's memo, and a stack that differs
/// from the remembered one only in a frame higher up (two callers with frames of the same size
/// at the same depth, taking turns) still gives exactly libgcc's frames, the changed frame
/// included.
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
#[test]
fn cfi_memo_follows_a_changed_stack() {
    use std::sync::atomic::Ordering::Relaxed;
    use tally_profiler::cfi::{Cfi, MEMO_HITS};
    let _alone = counting();
    let mut seen = [Vec::new(), Vec::new()];
    let mut hits = 0;
    for round in 0..8 {
        let mut gcc = [0usize; MAX_FRAMES];
        let mut cfi = [0usize; MAX_FRAMES];
        let (mut ng, mut nc, mut hit) = (0, 0, 0);
        let mut walk = || {
            let before = MEMO_HITS.load(Relaxed);
            nc = Cfi.capture(&mut cfi, 0);
            hit = MEMO_HITS.load(Relaxed) - before;
            ng = Libgcc.capture(&mut gcc, 0);
        };
        let side = round % 2;
        recurse(5, &mut || {
            if side == 0 {
                left(&mut walk)
            } else {
                right(&mut walk)
            }
        });
        assert_eq!(&cfi[1..nc], &gcc[1..ng], "round {round}");
        seen[side] = cfi[..nc].to_vec();
        if round >= 2 {
            hits += hit;
        }
    }
    // The two stacks differ (the caller of the walking closure), and the walks after the first
    // two took steps from the memo: every step below the frame that changed.
    assert_ne!(seen[0], seen[1]);
    assert!(hits >= 6 * 3, "{hits} steps from the memo in 6 walks");
}

/// Walks from the same code at different depths take their first steps from the walker's
/// prefixes (the memo, which compares `rsp`, misses them all at a new depth), and still give
/// exactly libgcc's frames: depths that go up and down, through two callers that take turns, so
/// that the prefix made for one caller stops at the frame where the other differs, and a second
/// prefix is made for it.
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
#[test]
fn cfi_prefixes_take_the_first_steps_at_any_depth() {
    use std::sync::atomic::Ordering::Relaxed;
    use tally_profiler::cfi::{Cfi, PREFIX_HITS};
    let _alone = counting();
    let mut from_prefix = Vec::new();
    for (round, depth) in [4, 7, 2, 9, 5, 3, 8, 6, 1, 10, 4, 7].into_iter().enumerate() {
        let mut gcc = [0usize; MAX_FRAMES];
        let mut cfi = [0usize; MAX_FRAMES];
        let (mut ng, mut nc, mut hit) = (0, 0, 0);
        let mut walk = || {
            let before = PREFIX_HITS.load(Relaxed);
            nc = Cfi.capture(&mut cfi, 0);
            hit = PREFIX_HITS.load(Relaxed) - before;
            ng = Libgcc.capture(&mut gcc, 0);
        };
        recurse(depth, &mut || {
            if round % 2 == 0 {
                left(&mut walk)
            } else {
                right(&mut walk)
            }
        });
        assert!(nc > depth + 2, "round {round}: {nc} frames");
        assert_eq!(&cfi[1..nc], &gcc[1..ng], "round {round}, depth {depth}");
        from_prefix.push(hit);
    }
    // From the third walk on (one prefix for each caller made by then) every walk takes at
    // least the capture's frame and its caller's from a prefix; another thread's walk may hold
    // the memo now and then.
    let with = from_prefix[2..].iter().filter(|&&hit| hit >= 2).count();
    assert!(with >= 8, "steps from prefixes per walk: {from_prefix:?}");
}

/// A walk that repeats the one before it through objects that stay loaded (this test program,
/// the C library) looks none of them up again: each step taken from the memo knows its object,
/// the walk's last one or the resident one the step remembers. The first walk looks its objects
/// up (the program, then the C library where the thread started): it skips a frame, so it takes
/// no step from the prefixes other tests' walks from the same code left (see
/// `cfi_prefixes_take_the_first_steps_at_any_depth`), whose object the walk would know.
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
#[test]
fn cfi_repeated_walks_look_up_no_object() {
    use std::sync::atomic::Ordering::Relaxed;
    use tally_profiler::cfi::{Cfi, MEMO_HITS, OBJECT_LOOKUPS, RESIDENT_LOOKUPS};
    let _alone = counting();
    let mut lookups = Vec::new();
    for round in 0..5 {
        let skip = usize::from(round == 0);
        let mut cfi = [0usize; MAX_FRAMES];
        let mut gcc = [0usize; MAX_FRAMES];
        let (mut nc, mut ng, mut counts) = (0, 0, (0, 0, 0));
        let mut walk = || {
            let before = (
                RESIDENT_LOOKUPS.load(Relaxed),
                OBJECT_LOOKUPS.load(Relaxed),
                MEMO_HITS.load(Relaxed),
            );
            nc = Cfi.capture(&mut cfi, skip);
            counts = (
                RESIDENT_LOOKUPS.load(Relaxed) - before.0,
                OBJECT_LOOKUPS.load(Relaxed) - before.1,
                MEMO_HITS.load(Relaxed) - before.2,
            );
            ng = Libgcc.capture(&mut gcc, 0);
        };
        recurse(5, &mut || left(&mut walk));
        assert_eq!(&cfi[1 - skip..nc], &gcc[1..ng], "round {round}");
        lookups.push(counts);
    }
    let (first, rest) = (lookups[0], &lookups[1..]);
    assert!(first.0 >= 1, "the first walk looked up no object: {lookups:?}");
    // Another thread's walk may take the memo now and then: most repeats, not all, must hit.
    let repeats = rest
        .iter()
        .filter(|&&(resident, found, hits)| resident == 0 && found == 0 && hits > 5);
    assert!(
        repeats.count() >= 3,
        "(resident lookups, loader lookups, memo hits) per walk: {lookups:?}"
    );
}

/// A capture's key knows the stack id told for the capture before it exactly when the walk
/// repeated that one step for step: runs of captures from one caller, then another caller at
/// the same depth, a deeper stack, and the first caller with one frame skipped; every id the key
/// knows is the one told for those very frames.
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
#[test]
fn cfi_key_knows_the_stack_of_a_repeated_walk() {
    use core::mem::MaybeUninit;
    use tally_profiler::cfi::Cfi;
    use tally_profiler::unwind::{Frames, StackKey};
    /// Stands for a stack table's address.
    const TABLE: usize = 0x5eed;
    let _alone = counting();
    let mut told: Vec<Vec<usize>> = Vec::new();
    let mut known = Vec::new();
    // (caller, frames skipped): 0 left, 1 right (same depth), 2 left one call deeper.
    let rounds = [
        (0, 0),
        (0, 0),
        (0, 0),
        (1, 0),
        (1, 0),
        (0, 0),
        (2, 0),
        (2, 0),
        (0, 0),
        (0, 1),
        (0, 1),
    ];
    for (round, &(caller, skip)) in rounds.iter().enumerate() {
        let mut got = (Vec::new(), StackKey::NONE);
        let mut walk = || {
            let mut frames: Frames = [MaybeUninit::uninit(); MAX_FRAMES];
            let (n, key) = Cfi.capture_keyed(&mut frames, skip);
            // SAFETY: the capture wrote `frames[..n]`.
            got = (
                frames[..n].iter().map(|f| unsafe { f.assume_init() }).collect(),
                key,
            );
        };
        match caller {
            0 => recurse(5, &mut || left(&mut walk)),
            1 => recurse(5, &mut || right(&mut walk)),
            _ => recurse(6, &mut || left(&mut walk)),
        }
        let (frames, key) = got;
        assert!(frames.len() > 5, "round {round}: {frames:x?}");
        match key.known(TABLE) {
            Some(id) => {
                assert_eq!(told[id as usize], frames, "round {round}");
                known.push(round);
            }
            None => {
                let id = told.iter().position(|f| *f == frames).unwrap_or_else(|| {
                    told.push(frames.clone());
                    told.len() - 1
                });
                Cfi.remember_stack(&key, TABLE, id as u32);
            }
        }
        assert_eq!(key.known(TABLE + 1), None, "another table's id");
    }
    assert_eq!(known, [1, 2, 4, 7, 10]);
    assert_eq!(told.len(), 4, "four different stacks");
}

// `call_with_rbp(f, arg, rbp)`: calls `f(arg)` with `rbp` holding `rbp`, as code built
// without frame pointers leaves any value there; its own CFA is `rsp`-based, the caller's
// `rbp` saved (and described) below its return address.
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
std::arch::global_asm!(
    ".text",
    ".globl tally_test_call_with_rbp",
    ".type tally_test_call_with_rbp, @function",
    "tally_test_call_with_rbp:",
    ".cfi_startproc",
    "push rbp",
    ".cfi_adjust_cfa_offset 8",
    ".cfi_rel_offset rbp, 0",
    "mov rbp, rdx",
    "mov rax, rdi",
    "mov rdi, rsi",
    "call rax",
    "pop rbp",
    ".cfi_adjust_cfa_offset -8",
    ".cfi_restore rbp",
    "ret",
    ".cfi_endproc",
    ".size tally_test_call_with_rbp, . - tally_test_call_with_rbp",
);

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
extern "C" {
    fn tally_test_call_with_rbp(
        f: extern "C" fn(*mut core::ffi::c_void),
        arg: *mut core::ffi::c_void,
        rbp: usize,
    );
}

/// Walks from the same place that differ only in what `rbp` holds, where no frame's rule
/// computes the CFA from it (code built without frame pointers keeps anything there), repeat
/// each other: the capture's key knows the stack id told for the walk before. (Compared in
/// every step, `rbp` made each such walk a new one, its frames interned again.)
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
#[test]
fn cfi_walks_that_differ_only_in_an_unused_rbp_repeat() {
    use core::mem::MaybeUninit;
    use tally_profiler::cfi::Cfi;
    use tally_profiler::unwind::{Frames, StackKey};
    const TABLE: usize = 0x7ab1e;
    struct Got {
        frames: Vec<usize>,
        key: StackKey,
    }
    extern "C" fn walk(arg: *mut core::ffi::c_void) {
        // SAFETY: `arg` is the `Got` the test passes, alive for the call.
        let got = unsafe { &mut *arg.cast::<Got>() };
        let mut frames: Frames = [MaybeUninit::uninit(); MAX_FRAMES];
        let (n, key) = Cfi.capture_keyed(&mut frames, 0);
        // SAFETY: the capture wrote `frames[..n]`.
        got.frames = frames[..n].iter().map(|f| unsafe { f.assume_init() }).collect();
        got.key = key;
    }
    let _alone = counting();
    let mut known = 0;
    let mut first: Option<Vec<usize>> = None;
    for round in 0..6usize {
        let mut got = Got {
            frames: Vec::new(),
            key: StackKey::NONE,
        };
        let rbp = 0x5a5a_0000_0000 + round * 0x1008;
        // SAFETY: `walk` takes the `Got` passed, which outlives the call.
        recurse(3, &mut || unsafe {
            tally_test_call_with_rbp(walk, (&mut got as *mut Got).cast(), rbp)
        });
        assert!(got.frames.len() > 5, "round {round}: {:x?}", got.frames);
        let frames = first.get_or_insert_with(|| got.frames.clone());
        assert_eq!(*frames, got.frames, "round {round}: the same frames");
        if got.key.known(TABLE) == Some(1) {
            known += 1;
        } else {
            Cfi.remember_stack(&got.key, TABLE, 1);
        }
    }
    assert!(known >= 4, "{known} of 5 walks after the first repeated it");
}

/// A frame in a library the program `dlopen`ed is no resident object's: each walk through it
/// asks the loader again (the library could be unloaded between walks, and another one loaded
/// where it was), and the frames still agree with libgcc's, after the library is closed and
/// opened again too.
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
#[test]
fn cfi_walker_asks_about_dlopened_code_every_walk() {
    use std::sync::atomic::Ordering::Relaxed;
    use tally_profiler::cfi::{Cfi, OBJECT_LOOKUPS};
    let dir = std::env::temp_dir().join(format!("tally-unwind-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (src, lib) = (dir.join("through.c"), dir.join("libthrough.so"));
    // Calls back, then does something after the call, so the call is not a jump.
    std::fs::write(
        &src,
        "int tally_through(void (*f)(void *), void *arg, int x) { f(arg); return x * 3 + 1; }\n",
    )
    .unwrap();
    let built = std::process::Command::new("cc")
        .args(["-O1", "-fno-optimize-sibling-calls", "-shared", "-fPIC", "-o"])
        .arg(&lib)
        .arg(&src)
        .status()
        .expect("cc (the C compiler) is needed to build the test's library");
    assert!(built.success());

    struct Walks {
        cfi: [usize; MAX_FRAMES],
        gcc: [usize; MAX_FRAMES],
        nc: usize,
        ng: usize,
        lookups: u64,
    }
    extern "C" fn walk(arg: *mut core::ffi::c_void) {
        // SAFETY: `arg` is the `Walks` the test passed through the library.
        let w = unsafe { &mut *(arg as *mut Walks) };
        let before = OBJECT_LOOKUPS.load(Relaxed);
        w.nc = Cfi.capture(&mut w.cfi, 0);
        w.lookups = OBJECT_LOOKUPS.load(Relaxed) - before;
        w.ng = Libgcc.capture(&mut w.gcc, 0);
    }
    type Through = extern "C" fn(extern "C" fn(*mut core::ffi::c_void), *mut core::ffi::c_void, i32) -> i32;
    let _alone = counting();
    let path = std::ffi::CString::new(lib.to_str().unwrap()).unwrap();
    for opening in 0..2 {
        // SAFETY: a library built just above, with no constructors; closed below once its
        // function has returned.
        let handle = unsafe { libc::dlopen(path.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
        assert!(!handle.is_null(), "dlopen {}", lib.display());
        // SAFETY: the symbol is the function of type `Through` the source above defines.
        let through: Through = unsafe {
            let sym = libc::dlsym(handle, c"tally_through".as_ptr());
            assert!(!sym.is_null());
            core::mem::transmute::<*mut libc::c_void, Through>(sym)
        };
        let object = tally_pal::process::loaded_object(through as *const () as usize).unwrap();
        for round in 0..3 {
            let mut w = Walks {
                cfi: [0; MAX_FRAMES],
                gcc: [0; MAX_FRAMES],
                nc: 0,
                ng: 0,
                lookups: 0,
            };
            assert_eq!(through(walk, &mut w as *mut Walks as *mut _, 2), 7);
            let ctx = format!("opening {opening} round {round}");
            assert_eq!(&w.cfi[1..w.nc], &w.gcc[1..w.ng], "{ctx}");
            assert!(
                w.cfi[..w.nc].iter().any(|&f| f >= object.start && f < object.end),
                "{ctx}: no frame in the library: {:x?}",
                &w.cfi[..w.nc]
            );
            assert!(
                w.lookups >= 1,
                "{ctx}: the library's frame was taken for a resident object's"
            );
        }
        // SAFETY: nothing of the library is running or referenced any more.
        assert_eq!(unsafe { libc::dlclose(handle) }, 0);
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// The same agreement from other threads, walking at once (the table is shared).
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
#[test]
fn cfi_walker_matches_libgcc_on_many_threads() {
    use tally_profiler::cfi::Cfi;
    let _counted_apart = counting();
    let threads: Vec<_> = (0..4)
        .map(|t| {
            std::thread::spawn(move || {
                for i in 0..200 {
                    let mut gcc = [0usize; MAX_FRAMES];
                    let mut cfi = [0usize; MAX_FRAMES];
                    let (mut ng, mut nc) = (0, 0);
                    recurse((t * 7 + i) % 30, &mut || {
                        nc = Cfi.capture(&mut cfi, 0);
                        ng = Libgcc.capture(&mut gcc, 0);
                    });
                    assert_eq!(&cfi[1..nc], &gcc[1..ng]);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

/// Across `fork` (with the profiler's fork handlers around it, as the allocator calls them) the
/// rule table stays usable in the child: a second walk of the same stack computes nothing.
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
#[test]
fn cfi_table_works_in_a_fork_child() {
    use tally_profiler::cfi::{Cfi, MISSES};
    use tally_profiler::PROFILER;
    // The table is closed to writers from here to the fork's end: not while another test counts.
    let _counted_apart = counting();
    PROFILER.lock_for_fork();
    // SAFETY: the child only walks its stack, reads atomics and exits with `_exit`.
    let pid = unsafe { libc::fork() };
    // SAFETY: this process took the locks just above.
    unsafe { PROFILER.unlock_after_fork(pid == 0) };
    if pid == 0 {
        let mut frames = [0usize; MAX_FRAMES];
        let mut computed = u64::MAX;
        recurse(12, &mut || {
            // The second walk meets only addresses the first one cached, except (if the compiler
            // unrolls this loop) the return address of its own call site.
            let mut before = 0;
            for round in 0..2 {
                if round == 1 {
                    before = MISSES.load(std::sync::atomic::Ordering::Relaxed);
                }
                Cfi.capture(&mut frames, 0);
            }
            computed = MISSES.load(std::sync::atomic::Ordering::Relaxed) - before;
        });
        // SAFETY: leaves the child at once, without running the parent's test harness.
        unsafe {
            libc::_exit(if computed <= 1 {
                0
            } else {
                computed.min(100) as i32
            })
        };
    }
    assert!(pid > 0, "fork failed");
    let mut status = 0;
    // SAFETY: waits for our own child.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "child computed {} rules on its second walk (status {status})",
        libc::WEXITSTATUS(status)
    );
}
