//! The malloc family's edge cases, as glibc programs expect them, and the errors Tally must
//! catch instead of corrupting memory.

mod child;

use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;
use std::ptr;

use tally::api;

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap()
}

fn set_errno(v: i32) {
    // SAFETY: __errno_location is always valid for the calling thread.
    unsafe { *libc::__errno_location() = v };
}

#[test]
fn malloc_zero_gives_unique_blocks() {
    let a = api::malloc(0);
    let b = api::malloc(0);
    assert!(!a.is_null() && !b.is_null() && a != b);
    assert!(api::malloc_usable_size(a) >= 1);
    // SAFETY: live blocks.
    unsafe {
        api::free(a);
        api::free(b);
        api::free(ptr::null_mut());
    }
    assert_eq!(api::malloc_usable_size(ptr::null_mut()), 0);
}

#[test]
fn huge_requests_fail_with_enomem() {
    set_errno(0);
    assert!(api::malloc(usize::MAX).is_null());
    assert_eq!(errno(), libc::ENOMEM);
    set_errno(0);
    assert!(api::malloc(tally::MAX_REQUEST + 1).is_null());
    assert_eq!(errno(), libc::ENOMEM);
    set_errno(0);
    assert!(
        api::calloc(usize::MAX / 2, 3).is_null(),
        "calloc overflow must fail"
    );
    assert_eq!(errno(), libc::ENOMEM);
    let p = api::malloc(100);
    set_errno(0);
    // SAFETY: `p` is live; a failing reallocarray leaves it alone.
    unsafe {
        assert!(api::reallocarray(p, usize::MAX / 2, 3).is_null());
        assert_eq!(errno(), libc::ENOMEM);
        assert!(api::realloc(p, usize::MAX - 10).is_null());
        assert_eq!(api::malloc_usable_size(p), 112);
        api::free(p);
    }
}

/// 64 TiB: inside the 128 TiB address space, far beyond any test machine's RAM + swap.
const ABSURD: usize = 1 << 46;

/// Whether the kernel would back an anonymous mapping of `size` bytes counted against its
/// overcommit policy: what glibc's malloc maps for a block this large.
fn kernel_backs(size: usize) -> bool {
    // SAFETY: a fresh anonymous mapping at an address of the kernel's choosing, never touched,
    // unmapped again at once.
    unsafe {
        let p = libc::mmap(
            ptr::null_mut(),
            size,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        if p == libc::MAP_FAILED {
            return false;
        }
        libc::munmap(p, size);
        true
    }
}

/// Requests the kernel cannot back fail as in glibc: null with `ENOMEM` from every entry point
/// (`ENOMEM` returned by `posix_memalign`, null from `GlobalAlloc`), a failed `realloc` leaves
/// its block intact, and memory stays usable afterwards.
#[test]
fn sizes_the_kernel_cannot_back_fail_with_enomem() {
    let policy = std::fs::read_to_string("/proc/sys/vm/overcommit_memory").unwrap();
    if kernel_backs(ABSURD) {
        assert_eq!(policy.trim(), "1", "only 'always overcommit' backs 64 TiB");
        eprintln!("vm.overcommit_memory=1: the kernel backs 64 TiB for glibc too; nothing to check");
        return;
    }
    let small = api::malloc(1000) as *mut u8;
    let huge = api::malloc(5 << 20) as *mut u8;
    // SAFETY: live blocks of 1000 bytes and 5 MiB.
    unsafe {
        ptr::write_bytes(small, 0x3c, 1000);
        ptr::write_bytes(huge, 0x3d, 5 << 20);
    }
    let expect_enomem = |what: &str, p: *mut c_void| {
        assert!(p.is_null(), "{what} returned {p:?}");
        assert_eq!(errno(), libc::ENOMEM, "{what}: errno");
        set_errno(0);
    };
    set_errno(0);
    expect_enomem("malloc(64 TiB)", api::malloc(ABSURD));
    expect_enomem("calloc(1, 64 TiB)", api::calloc(1, ABSURD));
    expect_enomem("calloc(2^23, 2^23)", api::calloc(1 << 23, 1 << 23));
    expect_enomem("aligned_alloc(4096, 64 TiB)", api::aligned_alloc(4096, ABSURD));
    expect_enomem("memalign(8 MiB, 64 TiB)", api::memalign(8 << 20, ABSURD));
    expect_enomem("valloc(64 TiB)", api::valloc(ABSURD));
    expect_enomem("pvalloc(64 TiB)", api::pvalloc(ABSURD));
    // SAFETY: `small` and `huge` are live; a failing realloc leaves them alone.
    unsafe {
        expect_enomem("realloc(1000 B, 64 TiB)", api::realloc(small.cast(), ABSURD));
        expect_enomem("realloc(5 MiB, 64 TiB)", api::realloc(huge.cast(), ABSURD));
        expect_enomem(
            "reallocarray(5 MiB, 2^23, 2^23)",
            api::reallocarray(huge.cast(), 1 << 23, 1 << 23),
        );
        let mut out = 7 as *mut c_void;
        assert_eq!(api::posix_memalign(&mut out, 64, ABSURD), libc::ENOMEM);
        assert_eq!(
            out, 7 as *mut c_void,
            "posix_memalign stored a pointer although it failed"
        );
        assert!(
            (0..1000).all(|i| *small.add(i) == 0x3c),
            "a failed realloc changed its block"
        );
        assert!((0..5 << 20).step_by(4096).all(|i| *huge.add(i) == 0x3d));
        assert!(api::malloc_usable_size(huge.cast()) >= 5 << 20);
    }

    // Rust's GlobalAlloc: null, the block given to realloc intact.
    let tally = tally::Tally;
    for align in [8, 64, 4096, 8 << 20] {
        let layout = Layout::from_size_align(ABSURD, align).unwrap();
        // SAFETY: a layout of non-zero size.
        unsafe {
            assert!(
                tally.alloc(layout).is_null(),
                "GlobalAlloc::alloc(64 TiB, align {align})"
            );
            assert!(
                tally.alloc_zeroed(layout).is_null(),
                "alloc_zeroed(64 TiB, align {align})"
            );
        }
    }
    let layout = Layout::from_size_align(1000, 8).unwrap();
    // SAFETY: `small` is a live block of Tally's of at least 1000 bytes, alignment 16.
    unsafe {
        assert!(tally.realloc(small, layout, ABSURD).is_null());
        assert!((0..1000).all(|i| *small.add(i) == 0x3c));
    }

    // Memory stays usable.
    let big = api::malloc(100 << 20) as *mut u8;
    assert!(!big.is_null());
    // SAFETY: live blocks, each freed once.
    unsafe {
        ptr::write_bytes(big, 1, 100 << 20);
        api::free(big.cast());
        api::free(small.cast());
        api::free(huge.cast());
    }
    let q = api::malloc(64);
    assert!(!q.is_null());
    // SAFETY: live block.
    unsafe { api::free(q) };
}

/// Blocks allocated one after another come in ascending address order, as glibc and mimalloc
/// hand them out: a structure built in order and walked in order then walks memory forwards,
/// which the processor's next-line prefetcher follows. Only where a refill's batch moves to
/// another slab (8 blocks of this class to a slab) may the next block be lower. The thread
/// cache used to pop a refill's blocks highest first: every step inside a slab went down.
#[test]
fn consecutive_blocks_come_in_ascending_order() {
    for size in [40usize, 700, 3000] {
        let blocks: Vec<*mut c_void> = (0..64).map(|_| api::malloc(size)).collect();
        let up = blocks.windows(2).filter(|pair| pair[1] > pair[0]).count();
        assert!(up >= 48, "{size}-byte blocks: {up} of 63 steps up: {blocks:?}");
        for p in blocks {
            // SAFETY: live blocks, freed once.
            unsafe { api::free(p) };
        }
    }
}

#[test]
fn calloc_zeroes_reused_memory() {
    for size in [8usize, 100, 5000, 40_000, 3 << 20] {
        let p = api::malloc(size) as *mut u8;
        // SAFETY: `p` is a live block of `size` bytes.
        unsafe {
            ptr::write_bytes(p, 0xAB, size);
            api::free(p.cast());
        }
        let q = api::calloc(1, size) as *mut u8;
        // SAFETY: `q` is a live zeroed block of `size` bytes.
        let bytes = unsafe { std::slice::from_raw_parts(q, size) };
        assert!(bytes.iter().all(|&b| b == 0), "calloc({size}) not zeroed");
        // SAFETY: live block.
        unsafe { api::free(q.cast()) };
    }
    let p = api::calloc(0, 10);
    assert!(!p.is_null());
    // SAFETY: live block.
    unsafe { api::free(p) };
}

#[test]
fn realloc_edge_cases() {
    // SAFETY: each pointer is live where used and given up by realloc/free.
    unsafe {
        let p = api::realloc(ptr::null_mut(), 40);
        assert!(!p.is_null());
        ptr::write_bytes(p as *mut u8, 7, 40);
        assert!(
            api::realloc(p, 0).is_null(),
            "realloc(p, 0) frees and returns null"
        );
        let p = api::malloc(24) as *mut u8;
        for i in 0..24 {
            *p.add(i) = i as u8;
        }
        // Same class: stays put.
        let q = api::realloc(p.cast(), 30) as *mut u8;
        assert_eq!(q, p);
        // Through small, large and huge sizes and back, contents kept.
        let mut cur = q;
        for size in [100usize, 20_000, 100_000, 3 << 20, 9 << 20, 50_000, 17] {
            cur = api::realloc(cur.cast(), size) as *mut u8;
            for i in 0..17 {
                assert_eq!(*cur.add(i), i as u8, "byte {i} after realloc to {size}");
            }
        }
        api::free(cur.cast());
    }
}

#[test]
fn large_blocks_resize_in_place() {
    // SAFETY: live blocks, each freed once.
    unsafe {
        // Find two adjacent 64 KiB blocks, free the second, and grow the first into its pages.
        let mut grown = false;
        let mut keep = Vec::new();
        for _ in 0..16 {
            let p = api::malloc(64 * 1024) as *mut u8;
            let q = api::malloc(64 * 1024) as *mut u8;
            if q as usize == p as usize + 64 * 1024 {
                *p = 42;
                api::free(q.cast());
                let r = api::realloc(p.cast(), 120 * 1024) as *mut u8;
                assert_eq!(r, p, "grew by moving although the next pages were free");
                assert_eq!(*r, 42);
                assert!(api::malloc_usable_size(r.cast()) >= 120 * 1024);
                // Shrinking stays in place too.
                let s = api::realloc(r.cast(), 20 * 1024) as *mut u8;
                assert_eq!(s, p);
                assert_eq!(api::malloc_usable_size(s.cast()), 20 * 1024);
                api::free(s.cast());
                grown = true;
                break;
            }
            keep.push(p);
            keep.push(q);
        }
        for p in keep {
            api::free(p.cast());
        }
        assert!(grown, "never got two adjacent large blocks");
    }
}

#[test]
fn alignment_rules() {
    let mut out: *mut c_void = ptr::null_mut();
    // SAFETY: `out` is a valid out-pointer; results are freed.
    unsafe {
        assert_eq!(api::posix_memalign(&mut out, 3, 8), libc::EINVAL);
        assert_eq!(
            api::posix_memalign(&mut out, 4, 8),
            libc::EINVAL,
            "must be a multiple of sizeof(void*)"
        );
        assert_eq!(api::posix_memalign(&mut out, 0, 8), libc::EINVAL);
        for lg in 3..=21 {
            let align = 1usize << lg;
            for size in [1usize, 24, align, 3 * align + 5, 70_000] {
                assert_eq!(api::posix_memalign(&mut out, align, size), 0);
                assert_eq!(out as usize % align, 0, "posix_memalign({align}, {size})");
                assert!(api::malloc_usable_size(out) >= size);
                ptr::write_bytes(out as *mut u8, 1, size);
                api::free(out);
                let p = api::aligned_alloc(align, size);
                assert_eq!(p as usize % align, 0, "aligned_alloc({align}, {size})");
                api::free(p);
                let p = api::memalign(align, size);
                assert_eq!(p as usize % align, 0, "memalign({align}, {size})");
                api::free(p);
            }
        }
        set_errno(0);
        assert!(api::aligned_alloc(24, 8).is_null());
        assert_eq!(errno(), libc::EINVAL);
        // memalign rounds a non-power-of-two alignment up, like glibc.
        let p = api::memalign(24, 8);
        assert_eq!(p as usize % 32, 0);
        api::free(p);
        let p = api::valloc(10);
        assert_eq!(p as usize % 4096, 0);
        api::free(p);
        let p = api::pvalloc(5000);
        assert_eq!(p as usize % 4096, 0);
        assert!(api::malloc_usable_size(p) >= 8192);
        api::free(p);
        let p = api::pvalloc(0);
        assert!(api::malloc_usable_size(p) >= 4096);
        api::free_sized(p, 0);
        let p = api::aligned_alloc(64, 64);
        api::free_aligned_sized(p, 64, 64);
    }
}

/// Grows a 64 MiB block to 1 GiB in ten steps; prints the counter deltas.
fn grow_huge_block() {
    let before = tally::stats::counters();
    let mut size = 64usize << 20;
    let mut p = api::malloc(size) as *mut u8;
    // SAFETY: live blocks; every pointer is given up to realloc.
    unsafe {
        for off in (0..size).step_by(1 << 20) {
            *p.add(off) = (off >> 20) as u8;
        }
        while size < 1 << 30 {
            size += 96 << 20;
            p = api::realloc(p.cast(), size) as *mut u8;
            assert!(!p.is_null());
        }
        for off in (0..64usize << 20).step_by(1 << 20) {
            assert_eq!(*p.add(off), (off >> 20) as u8);
        }
        api::free(p.cast());
    }
    let after = tally::stats::counters();
    println!(
        "remaps={} allocs={}",
        after.huge_remaps - before.huge_remaps,
        after.huge_allocs - before.huge_allocs
    );
}

/// Runs this test binary again with `TALLY_CHILD=<case>` and `TALLY_CONF=<conf>` (only
/// `child_entry`, which runs the case).
fn child_output(case: &str, conf: &str) -> std::process::Output {
    child::run(&[("TALLY_CHILD", case), ("TALLY_CONF", conf)])
}

/// [`child_output`]'s standard output, after checking that the child succeeded.
fn child_stdout(case: &str, conf: &str) -> String {
    let out = child_output(case, conf);
    assert!(out.status.success(), "{case}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Frees and reallocates huge blocks; prints what the mapping cache did.
fn reuse_huge_mappings() {
    let mib = 1usize << 20;
    let before = tally::stats::counters();
    // SAFETY: live blocks, each given up once.
    unsafe {
        let p = api::malloc(20 * mib) as *mut u8;
        ptr::write_bytes(p, 0xab, 20 * mib);
        api::free(p.cast());
        let dirty_after_free = tally::stats::stats().dirty;
        // Reuses the 20 MiB mapping (the first 12 MiB and up to its last chunk window; the rest
        // stays cached) yet reads as zero, as calloc must.
        let q = api::calloc(1, 12 * mib) as *mut u8;
        let zero = (0..12 * mib).all(|i| *q.add(i) == 0);
        let r = api::malloc(30 * mib) as *mut u8; // the 8 MiB tail, moved and grown by mremap
        ptr::write_bytes(r, 0x5a, 30 * mib);
        api::free(q.cast());
        api::free(r.cast());
        let mapped_cached = tally::stats::stats().mapped;
        let trimmed = api::malloc_trim(0);
        let mapped_trimmed = tally::stats::stats().mapped;
        let after = tally::stats::counters();
        println!(
            "reuses={} fresh={} zero={zero} dirty_after_free_mib={} trim={trimmed} \
             trim_released_mib={}",
            after.huge_reuses - before.huge_reuses,
            after.huge_allocs - before.huge_allocs - (after.huge_reuses - before.huge_reuses),
            dirty_after_free / mib as u64,
            (mapped_cached - mapped_trimmed) / mib as u64,
        );
    }
}

#[test]
fn freed_huge_mappings_are_reused_zeroed_for_calloc_and_trimmed() {
    let stdout = child_stdout("huge_cache", "");
    // One fresh mapping for three blocks; the 20 MiB waited as dirty memory; calloc zeroed the
    // recycled bytes; malloc_trim unmapped the 12 + 30 MiB left in the cache.
    assert!(
        stdout.contains("reuses=2 fresh=1 zero=true dirty_after_free_mib=20 trim=1 trim_released_mib=42"),
        "{stdout}"
    );
    // With dirty_decay_ms:0 nothing is kept: every block is a fresh mapping.
    let stdout = child_stdout("huge_cache", "dirty_decay_ms:0");
    assert!(
        stdout.contains("reuses=0 fresh=3 zero=true dirty_after_free_mib=0"),
        "{stdout}"
    );
}

/// Another thread's blocks freed here are not this thread's next blocks; prints whether they were.
fn free_other_threads_blocks() {
    // The main thread's blocks, from its arena; a new thread gets the next arena.
    let theirs: Vec<usize> = (0..4).map(|_| api::malloc(24) as usize).collect();
    let reused = std::thread::spawn(move || {
        // SAFETY: live blocks, each freed once; the other thread no longer uses them.
        unsafe {
            // An empty bin: the foreign block goes home, the next block comes from our arena.
            api::free(theirs[0] as *mut c_void);
            let mine = api::malloc(24);
            let first = mine as usize == theirs[0];
            // A bin holding one of ours: foreign blocks go under it, ours comes back first.
            api::free(mine);
            api::free(theirs[1] as *mut c_void);
            api::free(theirs[2] as *mut c_void);
            let next = api::malloc(24);
            let second = next as usize == theirs[1] || next as usize == theirs[2];
            api::free(next);
            api::free(theirs[3] as *mut c_void);
            (first, second)
        }
    })
    .join()
    .unwrap();
    println!("reused_foreign={reused:?}");
}

#[test]
fn other_threads_blocks_are_not_reused_first() {
    // Eight arenas, so that the new thread's is not the main thread's (with one per CPU on two
    // CPUs it may be).
    let stdout = child_stdout("foreign_free", "narenas:8");
    assert!(stdout.contains("reused_foreign=(false, false)"), "{stdout}");
}

/// `mallctl(name)` of a `u32`, read.
fn read_u32(name: &[u8], arg: Option<*mut c_void>) -> u32 {
    let mut value = 0u32;
    let mut len = std::mem::size_of::<u32>();
    let (new, new_len) = match &arg {
        Some(p) => (ptr::addr_of!(*p).cast(), std::mem::size_of::<*mut c_void>()),
        None => (ptr::null(), 0),
    };
    // SAFETY: valid pointers and sizes for a `u32` out and a pointer in.
    let rc = unsafe { api::mallctl(name, ptr::addr_of_mut!(value).cast(), &mut len, new, new_len) };
    assert_eq!(rc, 0, "mallctl {}", String::from_utf8_lossy(name));
    value
}

/// A thread that moves to another arena (`thread.arena`) frees the blocks of the arena it left
/// as another thread's, though its `free` remembered their chunk as its own arena's; prints
/// whether such a chunk was found and whether the block came back first.
fn free_after_moving_arena() {
    let seen = std::thread::spawn(|| {
        // SAFETY: live blocks, each freed once; `mallctl` with valid pointers and sizes.
        unsafe {
            // Two blocks of the thread's arena in one chunk (a new thread's bin may also hold
            // blocks of the thread that started it, which its start-up freed).
            let blocks: Vec<*mut c_void> = (0..16).map(|_| api::malloc(24)).collect();
            let from = read_u32(b"thread.arena", None);
            let chunk = |p: *mut c_void| p as usize >> 22;
            let ours: Vec<_> = blocks
                .iter()
                .copied()
                .filter(|&p| read_u32(b"arenas.lookup", Some(p)) == from)
                .collect();
            let pair = ours.iter().enumerate().find_map(|(i, &p)| {
                ours[i + 1..]
                    .iter()
                    .find(|&&q| chunk(q) == chunk(p))
                    .map(|&q| (p, q))
            });
            let Some((left, neighbour)) = pair else {
                return (false, false);
            };
            for &p in blocks.iter().filter(|&&p| p != left && p != neighbour) {
                api::free(p);
            }
            // `free` remembers the chunk, the thread's arena's, and skips its header after.
            api::free(neighbour);
            let to = (from + 1) % 8;
            let name = b"thread.arena";
            let new = ptr::addr_of!(to).cast();
            assert_eq!(api::mallctl(name, ptr::null_mut(), ptr::null_mut(), new, 4), 0);
            // A block of the new arena in the bin: one of the old arena's goes under it.
            let fresh = api::malloc(24);
            api::free(left);
            let next = api::malloc(24);
            let reused = next == left;
            api::free(next);
            api::free(fresh);
            (true, reused)
        }
    })
    .join()
    .unwrap();
    println!("moved_arena={seen:?}");
}

#[test]
fn blocks_of_the_arena_a_thread_left_are_not_reused_first() {
    let stdout = child_stdout("moved_arena", "narenas:8");
    assert!(stdout.contains("moved_arena=(true, false)"), "{stdout}");
}

/// Starts threads one after another; prints how many arenas ever got memory.
fn sequential_threads() {
    for t in 0..24usize {
        std::thread::spawn(move || {
            let blocks: Vec<usize> = (0..2000)
                .map(|i| api::malloc(16 + (i * 7 + t) % 3000) as usize)
                .collect();
            // SAFETY: live blocks, each freed once.
            unsafe { blocks.iter().for_each(|&p| api::free(p as *mut c_void)) };
        })
        .join()
        .unwrap();
    }
    let s = tally::stats::stats();
    let used = s.arenas[..s.narenas].iter().filter(|a| a.chunks > 0).count();
    println!("arenas_used={used} of {}", s.narenas);
}

#[test]
fn threads_take_the_least_used_arena() {
    // One worker alive at a time besides the test harness's main thread and the test's own:
    // every new worker takes the arena the last one left, so three arenas hold memory (round
    // robin would spread 24 workers over all 8).
    let stdout = child_stdout("sequential_threads", "narenas:8");
    let used: usize = stdout
        .split("arenas_used=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count in {stdout}"));
    assert!(used <= 3 && stdout.contains(" of 8"), "{stdout}");
}

/// Fills a bin, then allocates in another class only; prints how many blocks the first bin
/// still caches.
fn idle_bin_drains() {
    let cached_512 = || {
        let s = tally::stats::stats();
        s.classes.iter().find(|c| c.size == 512).map_or(0, |c| c.cached)
    };
    let blocks: Vec<usize> = (0..100).map(|_| api::malloc(500) as usize).collect();
    // SAFETY: live blocks, each freed once.
    unsafe { blocks.iter().for_each(|&p| api::free(p as *mut c_void)) };
    let full = cached_512();
    // 48 MiB in 1 KiB blocks: 768 events, thirteen looks at every bin.
    for _ in 0..48 * 1024 {
        let p = api::malloc(1000);
        // SAFETY: a live block, freed once.
        unsafe { api::free(p) };
    }
    let before = tally::stats::counters();
    println!(
        "full={full} drained={} gc_flushes={}",
        cached_512(),
        before.tcache_gc_flushes
    );
}

#[test]
fn idle_thread_cache_bins_drain() {
    let stdout = child_stdout("idle_bin", "");
    let value = |key: &str| -> u64 {
        stdout
            .split(&format!("{key}="))
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no {key} in {stdout}"))
    };
    // The bin kept its frees (up to its capacity), then lost a quarter per look (the first look
    // skips it: it was refilled): twelve looks leave a thirtieth.
    assert!(value("full") >= 50, "{stdout}");
    assert!(value("drained") * 10 <= value("full"), "{stdout}");
    assert!(value("gc_flushes") >= 11, "{stdout}");
}

#[test]
fn huge_realloc_moves_pages_without_copying() {
    // In a child process, so no other test's blocks touch the counters.
    let stdout = child_stdout("grow_huge", "");
    // Every step was an mremap (in place or moved), never a new block plus a copy.
    assert!(stdout.contains("remaps=10 allocs=1"), "{stdout}");
}

#[test]
fn junk_and_zero_fill_new_blocks() {
    for (conf, case, want) in [
        ("junk:alloc", "junk", "junk-alloc=true"),
        ("zero:true", "zero", "zeroed=true"),
    ] {
        assert!(child_stdout(case, conf).contains(want), "{conf}");
    }
}

/// Entry point for the child processes of the tests above and below (run by [`child_output`]).
#[test]
#[ignore = "child process of the scenarios"]
fn child_entry() {
    let case = child::case("TALLY_CHILD");
    // SAFETY: deliberately invalid frees, in a child process that is expected to abort.
    unsafe {
        match case.as_str() {
            "foreign" => {
                let mut on_stack = [0u8; 64];
                api::free(on_stack.as_mut_ptr().cast());
            }
            "interior" => {
                let p = api::malloc(100) as *mut u8;
                api::free(p.add(16).cast());
            }
            "large_interior" => {
                let p = api::malloc(100_000) as *mut u8;
                api::free(p.add(4096).cast());
            }
            "huge_interior" => {
                let p = api::malloc(10 << 20) as *mut u8;
                api::free(p.add(8).cast());
            }
            "grow_huge" => grow_huge_block(),
            "huge_cache" => reuse_huge_mappings(),
            "foreign_free" => free_other_threads_blocks(),
            "moved_arena" => free_after_moving_arena(),
            "sequential_threads" => sequential_threads(),
            "idle_bin" => idle_bin_drains(),
            "huge_double_free" => {
                let p = api::malloc(10 << 20);
                api::free(p);
                api::free(p);
            }
            "junk" => {
                let p = api::malloc(1000) as *mut u8;
                let q = api::malloc(100_000) as *mut u8;
                let all = |p: *mut u8, n: usize, v: u8| (0..n).all(|i| *p.add(i) == v);
                println!("junk-alloc={}", all(p, 1000, 0xa5) && all(q, 100_000, 0xa5));
            }
            "zero" => {
                let mut ok = true;
                for _ in 0..100 {
                    let p = api::malloc(3000) as *mut u8;
                    ok &= (0..3000).all(|i| *p.add(i) == 0);
                    std::ptr::write_bytes(p, 0xff, 3000);
                    api::free(p.cast());
                }
                println!("zeroed={ok}");
            }
            "nothing" => println!("nothing-ok"),
            "double" => {
                // Enough frees of one class to force a flush of the thread cache.
                let p = api::malloc(48);
                api::free(p);
                api::free(p);
                let mut v = Vec::new();
                for _ in 0..1000 {
                    v.push(api::malloc(48));
                }
                for q in v {
                    api::free(q);
                }
            }
            other => panic!("unknown case {other}"),
        }
    }
}

#[test]
fn a_failing_child_fails_its_scenario() {
    // The scenarios read a child's success and output: a child that did not run its case must
    // not look like one that did.
    let out = child_output("nothing", "");
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("nothing-ok"),
        "{out:?}"
    );
    let out = child_output("no_such_case", "");
    assert!(
        !out.status.success(),
        "a child with an unknown case passed: {out:?}"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("unknown case no_such_case"),
        "{out:?}"
    );
    let out = child::run(&[("TALLY_CONF", "")]);
    assert!(!out.status.success(), "a child without a case passed: {out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("TALLY_CHILD is not set"),
        "{out:?}"
    );
}

#[test]
fn invalid_frees_abort_with_one_line() {
    for (case, want) in [
        ("foreign", "not allocated by Tally"),
        ("interior", "not the start of a 112-byte block"),
        ("large_interior", "inside a block of"),
        ("huge_interior", "inside a huge block"),
        // A freed huge block's mapping waits in the cache, out of the page map.
        ("huge_double_free", "double free of 0x"),
        ("double", "double free of 0x"),
    ] {
        let out = child_output(case, "");
        let (status, stderr) = (out.status, String::from_utf8_lossy(&out.stderr));
        assert!(!status.success(), "{case}: child survived an invalid free");
        let line = stderr
            .lines()
            .find(|l| l.starts_with("tally: free(): "))
            .unwrap_or_else(|| {
                panic!("{case}: no tally message in stderr:\n{stderr}");
            });
        assert!(line.contains(want), "{case}: {line}");
        assert!(
            line.contains("0x"),
            "{case}: the message names the address: {line}"
        );
    }
}
