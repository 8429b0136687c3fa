//! Double frees, `realloc` of freed blocks and frees of never-allocated slots abort at that call,
//! whatever the size and wherever the block waits (this thread's cache, another thread's, its
//! slab, free pages, the huge-mapping cache), with one line naming the function and the address.
//! And a program that frees correctly never trips the check: blocks handed out again carry no
//! mark, however they were freed and whatever they hold.

mod child;

use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;
use std::sync::mpsc;

use tally::api;

/// Runs `case` in a child process with `conf` and returns (exited normally, stdout, stderr).
fn child(case: &str, conf: &str) -> (std::process::ExitStatus, String, String) {
    let out = child::run(&[("TALLY_CHILD", case), ("TALLY_CONF", conf)]);
    (
        out.status,
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Checks that `case` aborted (SIGABRT) with a `tally: <who>(): double free of 0x…` line that
/// says `place`, and that it got no further (the child prints `survived` after the bad call).
fn assert_caught(case: &str, conf: &str, who: &str, place: &str) {
    use std::os::unix::process::ExitStatusExt;
    let (status, stdout, stderr) = child(case, conf);
    assert_eq!(
        status.signal(),
        Some(libc::SIGABRT),
        "{case} ({conf}): not aborted: {status:?}\n{stdout}\n{stderr}"
    );
    assert!(
        !stdout.contains("survived"),
        "{case}: went on after the bad call:\n{stdout}"
    );
    let prefix = format!("tally: {who}(): double free of 0x");
    let line = stderr
        .lines()
        .find(|l| l.starts_with(&prefix))
        .unwrap_or_else(|| panic!("{case} ({conf}): no `{prefix}` line:\n{stderr}"));
    assert!(
        line.contains(place),
        "{case} ({conf}): {line}\n(wanted {place:?})"
    );
    assert_eq!(
        stderr.lines().filter(|l| l.starts_with("tally:")).count(),
        1,
        "{case}: one line:\n{stderr}"
    );
}

const IN_CACHE: &str = "the block is in this thread's cache";
const IN_SLAB: &str = "the block is free in its slab";
const OTHER_CACHE: &str = "waits in another thread's cache";
const KEPT: &str = "its pages are free, kept whole for the next block of its size";

#[test]
fn a_second_free_aborts_at_that_call_for_every_cached_size() {
    for size in [8, 16, 100, 5000, 15000, 20000, 32768, 40000, 100_000, 262_144] {
        assert_caught(&format!("twice:{size}"), "", "free", IN_CACHE);
    }
}

#[test]
fn a_second_free_after_other_allocations_still_aborts() {
    assert_caught("twice_later:100", "", "free", IN_CACHE);
    assert_caught("twice_later:5000", "", "free", IN_CACHE);
}

#[test]
fn realloc_of_a_freed_block_aborts() {
    for size in [16, 100, 5000, 32768] {
        assert_caught(&format!("realloc_freed:{size}"), "", "realloc", IN_CACHE);
    }
    assert_caught("realloc_freed:100000", "", "realloc", IN_CACHE);
    assert_caught("realloc_freed:1000000", "", "realloc", "its pages are free");
    assert_caught("realloc_freed:10000000", "", "realloc", "huge-mapping cache");
    // To a size of the same class: a large block is found by its first page's word and kept
    // where it is, but not once freed.
    for size in [20000, 100_000] {
        assert_caught(&format!("realloc_freed_same:{size}"), "", "realloc", IN_CACHE);
    }
}

#[test]
fn realloc_of_a_page_inside_a_large_block_is_named_so() {
    for size in [100_000usize, 1_000_000] {
        let class_size = tally::api::nallocx(size, 0);
        assert_inside_block(&format!("realloc_interior:{size}"), "realloc", class_size, 4096);
    }
}

/// Checks that `case` aborted with `tally: <who>(): invalid pointer 0x…: inside a block of
/// <class_size> bytes at 0x…`, the pointer `distance` bytes past the block the child printed
/// (`block 0x…`), and got no further.
#[track_caller]
fn assert_inside_block(case: &str, who: &str, class_size: usize, distance: usize) {
    use std::os::unix::process::ExitStatusExt;
    let (status, stdout, stderr) = child(case, "");
    assert_eq!(status.signal(), Some(libc::SIGABRT), "{case}: {stderr}");
    assert!(!stdout.contains("survived"), "{stdout}");
    let block = printed_block(&stdout);
    let want = format!(
        "tally: {who}(): invalid pointer {:#x}: inside a block of {class_size} bytes at {block:#x}",
        block + distance,
    );
    assert_eq!(stderr.trim_end(), want, "{case}");
}

/// The address of the block the child printed (`block 0x…`).
#[track_caller]
fn printed_block(stdout: &str) -> usize {
    let block = stdout
        .lines()
        .find_map(|l| l.split("block 0x").nth(1))
        .unwrap_or_else(|| panic!("no `block 0x…` line: {stdout}"));
    usize::from_str_radix(block.trim(), 16).unwrap()
}

/// Checks that `case` unmapped a chunk and that the later `free` of a pointer into it aborted
/// as an invalid pointer (not a block: looked up again), not by reading the unmapped header.
fn assert_gone_chunk_is_no_block(case: &str) {
    use std::os::unix::process::ExitStatusExt;
    let (status, stdout, stderr) = child(case, "dirty_decay_ms:0,muzzy_decay_ms:0");
    let unmapped: u64 = stdout
        .lines()
        .find_map(|l| l.split("unmapped ").nth(1))
        .unwrap_or_else(|| panic!("{case}: {stdout}\n{stderr}"))
        .parse()
        .unwrap();
    assert!(
        unmapped >= 1,
        "{case}: the second chunk was not given back: {stdout}"
    );
    assert_eq!(status.signal(), Some(libc::SIGABRT), "{case}: {stdout}\n{stderr}");
    assert!(!stdout.contains("survived"), "{case}: {stdout}");
    let p = printed_block(&stdout) + 64;
    assert_eq!(
        stderr.trim_end(),
        format!("tally: free(): invalid pointer {p:#x}: not allocated by Tally"),
        "{case}"
    );
}

#[test]
fn a_pointer_into_a_chunk_given_back_is_no_block() {
    // `free` remembers the chunk it last found (`pagemap::ChunkSeen`); once that chunk is
    // unmapped, a pointer into it must be looked up again, not read through the memory.
    assert_gone_chunk_is_no_block("gone_chunk");
}

#[test]
fn a_pointer_into_a_chunk_another_thread_gave_back_is_no_block() {
    // Another thread remembers the chunk (it freed the block last); this thread gives the chunk
    // back. The other thread must have forgotten it before it was unmapped
    // (`decay::unmap_retired`): its next pointer there is looked up again, not read through
    // the unmapped header (which would be SIGSEGV).
    assert_gone_chunk_is_no_block("gone_chunk_elsewhere");
}

#[test]
fn a_block_flushed_back_to_its_slab_is_still_caught() {
    assert_caught("back_in_slab:48", "", "free", IN_SLAB);
    assert_caught("back_in_slab:3000", "", "free", IN_SLAB);
    // Without thread caches every free goes straight to the slab.
    assert_caught("twice:100", "tcache:false", "free", IN_SLAB);
}

#[test]
fn a_block_in_another_threads_cache_is_caught() {
    assert_caught("other_thread:64", "", "free", OTHER_CACHE);
    assert_caught("other_thread:100000", "", "free", OTHER_CACHE);
}

#[test]
fn never_allocated_slots_are_caught() {
    // A slot the refill put in this thread's cache, never handed to the program.
    assert_caught("unallocated_cached", "", "free", IN_CACHE);
    // A slot still free in its slab.
    assert_caught("unallocated_in_slab", "", "free", IN_SLAB);
    // A slot on a page of its slab that nothing was handed out from yet.
    use std::os::unix::process::ExitStatusExt;
    let (status, _, stderr) = child("unallocated_unopened", "");
    assert_eq!(status.signal(), Some(libc::SIGABRT), "{stderr}");
    assert!(
        stderr
            .lines()
            .any(|l| l.starts_with("tally: free(): invalid pointer 0x")
                && l.ends_with("never allocated (no block on its page was handed out yet)")),
        "{stderr}"
    );
}

#[test]
fn a_pointer_into_a_large_block_is_named_so_on_any_of_its_pages() {
    // 100 KiB (25 pages, a class the big cache keeps) and 1 MiB (from the page heap): a large
    // block's info words are on its first and last pages only, those between say free.
    for size in [100_000usize, 1_000_000] {
        let class_size = tally::api::nallocx(size, 0);
        let pages = class_size / 4096;
        // 8 bytes into a page, or (past the first) at its start: what the big cache's quick
        // test in `free` looks at.
        let places = [0, 1, pages / 2, pages - 2, pages - 1].map(|page| (page, 8));
        let starts = [1, pages / 2, pages - 1].map(|page| (page, 0));
        for (page, offset) in places.into_iter().chain(starts) {
            let case = format!("interior:{size}:{page}:{offset}");
            assert_inside_block(&case, "free", class_size, page * 4096 + offset);
        }
    }
}

#[test]
fn large_and_huge_double_frees_abort() {
    // 100 KiB: a class the big cache keeps (`free` finds it without the full lookup), in this
    // thread's cache, in another's, and, with the cache below it, back in the page heap.
    assert_caught("twice:100000", "", "free", IN_CACHE);
    assert_caught("other_thread:100000", "", "free", OTHER_CACHE);
    assert_caught("twice:100000", "tcache_max:32768", "free", KEPT);
    // 20 KiB, a class the thread cache's bins keep: without them, home at once, kept whole.
    assert_caught("twice:20000", "tcache:false", "free", KEPT);
    // Its run kept whole (`extent.rs`) only while freed pages wait for purge passes.
    assert_caught(
        "twice:100000",
        "tcache_max:32768,dirty_decay_ms:0",
        "free",
        "its pages are free",
    );
    assert_caught("twice:1000000", "", "free", "its pages are free");
    assert_caught("twice:10000000", "", "free", "huge-mapping cache");
}

#[test]
fn a_sampled_block_freed_twice_aborts() {
    // Every allocation sampled: the block's pages wait in its arena's stash of sampled runs,
    // carrying its free mark.
    const SAMPLE_ALL: &str = "prof:true,lg_prof_sample:0";
    const STASHED: &str = "a sampled block freed before";
    for size in [16, 5000, 32768] {
        assert_caught(&format!("twice:{size}"), SAMPLE_ALL, "free", STASHED);
    }
    // Classes the thread cache does not keep, up to 64 KiB, wait there too (marked as well).
    for size in [40000, 65536] {
        assert_caught(&format!("twice:{size}"), SAMPLE_ALL, "free", STASHED);
    }
    // A class past the stash's: its run went back to the page heap, found by the full lookup
    // after `free`'s quick check of the first page's word finds no block there.
    assert_caught("twice:100000", SAMPLE_ALL, "free", "its pages are free");
    assert_caught("realloc_freed:100", SAMPLE_ALL, "realloc", STASHED);
    assert_caught("realloc_freed:50000", SAMPLE_ALL, "realloc", STASHED);
    // A sampled block `realloc` moved: a cached class's run waits in the stash (in the sampled
    // region, apart from ordinary blocks); a larger class's goes to the page heap, where the
    // next block of a growing buffer may grow over it.
    assert_caught("moved_then_freed:5000", SAMPLE_ALL, "free", STASHED);
    assert_caught("moved_then_freed:50000", SAMPLE_ALL, "free", "its pages are free");
    // Rust's `dealloc` sees a sampled block by its page and hands it to `free`.
    assert_caught("dealloc_twice", SAMPLE_ALL, "free", STASHED);
}

#[test]
fn rust_dealloc_twice_aborts() {
    assert_caught("dealloc_twice", "", "dealloc", IN_CACHE);
    // Rust's `realloc` of a small block finds its class by the layout, as `dealloc` does, and
    // still catches a block freed before.
    assert_caught("realloc_dealloced", "", "realloc", IN_CACHE);
}

#[test]
fn correct_programs_never_trip_the_check() {
    for conf in ["", "tcache:false", "prof:true,lg_prof_sample:10", "junk:true"] {
        let (status, stdout, stderr) = child("correct", conf);
        assert!(status.success(), "({conf}): {status:?}\n{stdout}\n{stderr}");
        assert!(stdout.contains("correct-ok"), "({conf}): {stdout}\n{stderr}");
    }
}

/// Blocks allocated and freed in every way a correct program may, none written to (so any mark
/// left in a block handed out would be seen at its free), across threads, with reallocs and
/// Rust's sized deallocation.
fn correct_program() {
    let sizes = [
        1usize, 8, 16, 24, 100, 512, 3000, 15000, 16384, 20000, 32768, 100_000,
    ];
    // SAFETY: every block is live until freed once.
    unsafe {
        for round in 0..50 {
            let mut blocks: Vec<*mut c_void> = Vec::new();
            for (i, &size) in sizes.iter().enumerate().cycle().take(600) {
                let p = match (round + i) % 3 {
                    0 => api::malloc(size),
                    1 => api::calloc(1, size),
                    _ => api::realloc(api::malloc(size / 2 + 1), size),
                };
                assert!(!p.is_null());
                blocks.push(p);
            }
            // Free in an order that mixes classes, half of them from another thread.
            let theirs: Vec<usize> = blocks.iter().skip(1).step_by(2).map(|&p| p as usize).collect();
            std::thread::spawn(move || {
                for p in theirs {
                    api::free(p as *mut c_void);
                }
            })
            .join()
            .unwrap();
            for &p in blocks.iter().step_by(2) {
                api::free(p);
            }
        }
        let layout = Layout::from_size_align(40, 8).unwrap();
        for _ in 0..10_000 {
            let p = tally::Tally.alloc(layout);
            tally::Tally.dealloc(p, layout);
        }
        // Rust's `realloc`: blocks grown from 1 byte past the small classes and shrunk back,
        // at alignments 1 to 16, freed with their last layout.
        for round in 0..200usize {
            let align = 1 << (round % 5);
            let mut layout = Layout::from_size_align(1, align).unwrap();
            let mut p = tally::Tally.alloc(layout);
            let sizes = (0..16)
                .map(|k| 1usize << k)
                .chain((0..16).rev().map(|k| (1usize << k) + round));
            for size in sizes {
                p = tally::Tally.realloc(p, layout, size);
                assert!(!p.is_null());
                layout = Layout::from_size_align(size, align).unwrap();
            }
            tally::Tally.dealloc(p, layout);
        }
    }
    println!("correct-ok");
}

/// A block of `size` whose slab is new: the first block of its class this process allocates
/// after allocating and freeing nothing else of the class.
fn size_of_case(case: &str) -> usize {
    case.split(':').nth(1).map_or(0, |s| s.parse().unwrap())
}

#[test]
#[ignore = "the child process of this file's scenarios"]
fn child_entry() {
    let case = child::case("TALLY_CHILD");
    let size = size_of_case(&case);
    let name = case.split(':').next().unwrap();
    // SAFETY: deliberately invalid frees, in a child process that is expected to abort.
    unsafe {
        match name {
            "twice" => {
                let p = api::malloc(size);
                api::free(p);
                api::free(p);
                // Were it not caught: two owners of one block.
                let (a, b) = (api::malloc(size), api::malloc(size));
                println!("survived same={}", a == b);
            }
            "twice_later" => {
                let p = api::malloc(size);
                api::free(p);
                let others: Vec<_> = (0..10).map(|i| api::malloc(i * 40 + 8)).collect();
                api::free(p);
                println!("survived {}", others.len());
            }
            "interior" => {
                // `interior:SIZE:PAGE:OFFSET`: frees the address OFFSET bytes into page PAGE of a
                // live block.
                let field = |i: usize| -> usize { case.split(':').nth(i).unwrap().parse().unwrap() };
                let (page, offset) = (field(2), field(3));
                let p = api::malloc(size);
                let keep = api::malloc(size);
                println!("block {p:?}");
                api::free(p.cast::<u8>().add(page * 4096 + offset).cast());
                println!("survived {keep:?}");
            }
            "gone_chunk" => {
                // Two blocks of 2 MiB cannot share a chunk: the second maps its own. Freed
                // last, its chunk is the one `free` remembers (`pagemap::ChunkSeen`); given
                // back to the OS, a pointer into it is no block, not a read of unmapped memory.
                let keep = api::malloc(16);
                let a = api::malloc(2 << 20) as *mut u8;
                let b = api::malloc(2 << 20) as *mut u8;
                let before = tally::stats().counters.chunks_unmapped;
                api::free(a.cast());
                api::free(b.cast());
                api::malloc_trim(0);
                println!("unmapped {}", tally::stats().counters.chunks_unmapped - before);
                println!("block {b:?}");
                api::free(b.add(64).cast());
                println!("survived {keep:?}");
            }
            "gone_chunk_elsewhere" => {
                // As `gone_chunk`, but the thread that remembers the chunk is not the one that
                // gives it back. That thread takes a cache first (a thread remembers chunks only
                // while it has one), before the two blocks exist, so that its own block lies in
                // neither block's chunk; between the blocks' making and the give-back nothing
                // allocates (barriers and atomics, made before).
                use std::sync::atomic::{AtomicUsize, Ordering};
                use std::sync::{Arc, Barrier};
                let keep = api::malloc(16);
                let step = Arc::new(Barrier::new(2));
                let blocks = Arc::new([AtomicUsize::new(0), AtomicUsize::new(0)]);
                let other = {
                    let (step, blocks) = (step.clone(), blocks.clone());
                    std::thread::spawn(move || {
                        let own = api::malloc(32);
                        step.wait(); // 1: it has a cache
                        step.wait(); // 2: the blocks exist
                        let b = blocks[1].load(Ordering::Relaxed);
                        api::free(blocks[0].load(Ordering::Relaxed) as *mut c_void);
                        api::free(b as *mut c_void);
                        step.wait(); // 3: freed here, the last chunk this thread found
                        step.wait(); // 4: given back
                        api::free((b + 64) as *mut c_void);
                        api::free(own);
                    })
                };
                step.wait();
                let a = api::malloc(2 << 20) as usize;
                let b = api::malloc(2 << 20) as usize;
                let before = tally::stats().counters.chunks_unmapped;
                blocks[0].store(a, Ordering::Relaxed);
                blocks[1].store(b, Ordering::Relaxed);
                step.wait();
                step.wait();
                api::malloc_trim(0);
                println!("unmapped {}", tally::stats().counters.chunks_unmapped - before);
                println!("block {:#x}", b);
                step.wait();
                other.join().unwrap();
                println!("survived {keep:?}");
            }
            "realloc_freed" => {
                let p = api::malloc(size);
                api::free(p);
                let q = api::realloc(p, size * 2);
                println!("survived {q:?}");
            }
            "moved_then_freed" => {
                // Moved by `realloc` (into a huge block: always a new mapping), then freed.
                let p = api::malloc(size);
                let q = api::realloc(p, 4 << 20);
                assert!(!q.is_null() && q != p);
                api::free(p);
                println!("survived {q:?}");
            }
            "realloc_freed_same" => {
                let p = api::malloc(size);
                api::free(p);
                let q = api::realloc(p, size + 1);
                println!("survived {q:?}");
            }
            "realloc_interior" => {
                // The second page of a live block, to a size of its class.
                let p = api::malloc(size);
                println!("block {p:?}");
                let q = api::realloc(p.cast::<u8>().add(4096).cast(), size);
                println!("survived {q:?}");
            }
            "back_in_slab" => {
                // Enough frees of the class after it to flush it out of the thread cache; a
                // neighbour kept alive keeps its slab (else its pages go free: another message).
                let keep = api::malloc(size);
                let p = api::malloc(size);
                let more: Vec<_> = (0..1000).map(|_| api::malloc(size)).collect();
                api::free(p);
                for q in more {
                    api::free(q);
                }
                api::free(p);
                println!("survived {keep:?}");
            }
            "other_thread" => {
                let p = api::malloc(size) as usize;
                let (freed_tx, freed_rx) = mpsc::channel();
                let (done_tx, done_rx) = mpsc::channel::<()>();
                let t = std::thread::spawn(move || {
                    // One block of its own in the bin, so the foreign one is buried in this
                    // thread's cache rather than sent home.
                    let mine = api::malloc(size);
                    api::free(mine);
                    api::free(p as *mut c_void);
                    freed_tx.send(()).unwrap();
                    done_rx.recv().ok();
                });
                freed_rx.recv().unwrap();
                api::free(p as *mut c_void);
                done_tx.send(()).unwrap();
                t.join().unwrap();
                println!("survived");
            }
            "unallocated_cached" => {
                // The first block of 224 bytes: the refill put its neighbours in the cache
                // (blocks come lowest first: the one above it is next).
                let p = api::malloc(224) as *mut u8;
                api::free(p.add(224).cast());
                println!("survived");
            }
            "unallocated_in_slab" => {
                // A slot well past what the first refills took.
                let p = api::malloc(16) as *mut u8;
                api::free(p.add(16 * 100).cast());
                println!("survived");
            }
            "unallocated_unopened" => {
                // The first block of 5120 bytes: its slab is 10 pages of 8 slots, the first
                // refill takes slots 0 to 2 (opening pages 0 to 3) and malloc hands out slot 0;
                // slot 5 starts on page 6.
                let p = api::malloc(5000) as *mut u8;
                api::free(p.add(5120 * 5).cast());
                println!("survived");
            }
            "dealloc_twice" => {
                let layout = Layout::from_size_align(40, 8).unwrap();
                let p = tally::Tally.alloc(layout);
                tally::Tally.dealloc(p, layout);
                tally::Tally.dealloc(p, layout);
                println!("survived");
            }
            "realloc_dealloced" => {
                let layout = Layout::from_size_align(40, 8).unwrap();
                let p = tally::Tally.alloc(layout);
                tally::Tally.dealloc(p, layout);
                let q = tally::Tally.realloc(p, layout, 80);
                println!("survived {q:?}");
            }
            "correct" => correct_program(),
            other => panic!("unknown case {other}"),
        }
    }
}
