//! Tally as Rust's `#[global_allocator]`: a multithreaded stress with content checks.
//!
//! Eight threads build `Vec`s, `Box<[u8]>`s, `String`s, over-aligned boxes and raw
//! `std::alloc` blocks with alignments up to 1 MiB, all filled from a per-item seed. Items travel
//! around a ring of `mpsc` channels, so most are dropped, grown or shrunk by a thread other than
//! the one that allocated them; each item is verified before every drop and resize.
//!
//! To prove Tally (not the system allocator) served all this, the test re-runs itself in a child
//! process with `TALLY_CONF=stats_print:true` and no `LD_PRELOAD`: the child must pass and its
//! stderr must carry Tally's stats line showing use, which only the linked-in Tally can print.

use std::alloc::Layout;
use std::process::Command;
use std::sync::mpsc;
use std::thread;
use tally_tests::{run, Mode, Rng, DEFAULT_TIMEOUT};

#[global_allocator]
static A: tally::Tally = tally::Tally;

const THREADS: usize = 8;
const ITEMS_PER_THREAD: u64 = 4000;
/// Set in the child process: run the stress itself instead of spawning.
const CHILD_ENV: &str = "TALLY_TESTS_GLOBAL_ALLOCATOR_CHILD";

fn mix(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^ (x >> 33)
}

/// Word `k` of the pattern for `seed`; byte `i` of an item is byte `i % 8` of word `i / 8`
/// (little-endian), so fills and checks work a word at a time.
fn pattern_word(seed: u64, k: usize) -> [u8; 8] {
    mix(seed ^ k as u64).to_le_bytes()
}

fn fill(bytes: &mut [u8], seed: u64) {
    for (k, chunk) in bytes.chunks_mut(8).enumerate() {
        chunk.copy_from_slice(&pattern_word(seed, k)[..chunk.len()]);
    }
}

fn check(bytes: &[u8], seed: u64, what: &str) {
    for (k, chunk) in bytes.chunks(8).enumerate() {
        if *chunk != pattern_word(seed, k)[..chunk.len()] {
            panic!(
                "{what} at {:p} (len {}) corrupted in bytes {}..{}",
                bytes.as_ptr(),
                bytes.len(),
                8 * k,
                8 * k + chunk.len()
            );
        }
    }
}

/// A block from `std::alloc::alloc` with an explicit layout (alignment up to 1 MiB).
struct RawBlock {
    ptr: *mut u8,
    layout: Layout,
}

// SAFETY: RawBlock owns its allocation exclusively (like a Box); the global allocator is
// thread-safe, so the block may be freed or resized from any thread.
unsafe impl Send for RawBlock {}

impl RawBlock {
    /// Allocates `size` bytes aligned to `align` and fills them from `seed`; with `zeroed`, by
    /// `alloc_zeroed`, checking the block really was zero first.
    fn new(size: usize, align: usize, zeroed: bool, seed: u64) -> RawBlock {
        let layout = Layout::from_size_align(size, align).expect("valid layout");
        // SAFETY: `size` is nonzero (callers pass >= 1).
        let ptr = unsafe {
            if zeroed {
                std::alloc::alloc_zeroed(layout)
            } else {
                std::alloc::alloc(layout)
            }
        };
        if ptr.is_null() {
            std::alloc::handle_alloc_error(layout);
        }
        assert_eq!(ptr as usize % align, 0, "alloc({layout:?}) returned {ptr:p}");
        let block = RawBlock { ptr, layout };
        if zeroed {
            assert!(
                block.bytes().iter().all(|&b| b == 0),
                "alloc_zeroed({layout:?}) returned non-zero memory"
            );
        }
        // SAFETY: the block is live, ours, and `size` bytes long.
        unsafe { fill_raw(ptr, 0, size, seed) };
        block
    }

    fn bytes(&self) -> &[u8] {
        // SAFETY: `ptr` is a live allocation of `layout.size()` bytes that we own, and every
        // byte was initialised: `new` and `resize` fill the whole block before returning.
        unsafe { std::slice::from_raw_parts(self.ptr, self.layout.size()) }
    }

    /// Resizes with `std::alloc::realloc`; the common prefix must survive, alignment too.
    fn resize(&mut self, new_size: usize, seed: u64) {
        check(self.bytes(), seed, "raw block before realloc");
        let old_size = self.layout.size();
        // SAFETY: `ptr` was allocated with `layout` by the global allocator and is live;
        // `new_size` is nonzero and, rounded up to the alignment, far below isize::MAX.
        let ptr = unsafe { std::alloc::realloc(self.ptr, self.layout, new_size) };
        let new_layout = Layout::from_size_align(new_size, self.layout.align()).expect("valid layout");
        if ptr.is_null() {
            std::alloc::handle_alloc_error(new_layout);
        }
        assert_eq!(
            ptr as usize % new_layout.align(),
            0,
            "realloc to {new_layout:?} lost the alignment: {ptr:p}"
        );
        self.ptr = ptr;
        self.layout = new_layout;
        let keep = old_size.min(new_size);
        // SAFETY: the first `keep` bytes were copied from the initialised old block.
        let prefix = unsafe { std::slice::from_raw_parts(ptr, keep) };
        check(prefix, seed, "raw block after realloc");
        // SAFETY: the block is live, ours, and `new_size` bytes long.
        unsafe { fill_raw(ptr, keep, new_size, seed) };
    }
}

/// Writes pattern bytes `from..to` of `seed` through a raw pointer (the bytes may be
/// uninitialised, so no reference is made).
///
/// # Safety
/// `ptr..ptr + to` must be valid for writes.
unsafe fn fill_raw(ptr: *mut u8, from: usize, to: usize, seed: u64) {
    let mut i = from;
    while i < to {
        let word = pattern_word(seed, i / 8);
        let start = i % 8;
        let n = (8 - start).min(to - i);
        // SAFETY: `i + n <= to`, and the caller guarantees `ptr..ptr + to` is writable; a
        // local array never overlaps the block.
        unsafe { std::ptr::copy_nonoverlapping(word[start..].as_ptr(), ptr.add(i), n) };
        i += n;
    }
}

impl Drop for RawBlock {
    fn drop(&mut self) {
        // SAFETY: `ptr` was allocated with exactly `layout` and is freed only here.
        unsafe { std::alloc::dealloc(self.ptr, self.layout) }
    }
}

#[repr(C, align(4096))]
struct Page([u64; 512]);

/// One allocation of some kind whose contents follow from `seed`.
enum Item {
    Words(Vec<u64>),
    Bytes(Box<[u8]>),
    Text(String),
    Page(Box<Page>),
    Raw(RawBlock),
}

fn text_for(seed: u64, len: usize) -> String {
    let mut text = String::new();
    let mut n = seed;
    while text.len() < len {
        n = mix(n);
        text.push_str(&format!("{n:x}-"));
    }
    text
}

fn make_item(seed: u64) -> Item {
    let mut rng = Rng::new(seed);
    let size = match rng.below(100) {
        0..=69 => 1 + rng.below(256) as usize,
        70..=94 => 257 + rng.below(16 * 1024) as usize,
        95..=98 => 16 * 1024 + rng.below(112 * 1024) as usize,
        // 1 MiB+ for one item in 200.
        _ if rng.below(2) == 0 => (1 << 20) + rng.below(1 << 20) as usize,
        _ => 1 + rng.below(64 * 1024) as usize,
    };
    match rng.below(5) {
        0 => Item::Words((0..size.div_ceil(8) as u64).map(|i| mix(seed + i)).collect()),
        1 => {
            let mut bytes = vec![0u8; size].into_boxed_slice();
            fill(&mut bytes, seed);
            Item::Bytes(bytes)
        }
        2 => Item::Text(text_for(seed, size.min(4096))),
        3 => {
            let mut page = Box::new(Page([0; 512]));
            assert_eq!(&*page as *const Page as usize % 4096, 0, "Box<Page> misaligned");
            for (i, word) in page.0.iter_mut().enumerate() {
                *word = mix(seed ^ i as u64);
            }
            Item::Page(page)
        }
        _ => {
            let align = 1usize << rng.below(21); // 1 B .. 1 MiB
            let zeroed = rng.below(4) == 0;
            Item::Raw(RawBlock::new(size, align, zeroed, seed))
        }
    }
}

fn verify(item: &Item, seed: u64) {
    match item {
        Item::Words(words) => {
            for (i, &word) in words.iter().enumerate() {
                assert_eq!(word, mix(seed + i as u64), "Vec<u64> corrupted at {i}");
            }
        }
        Item::Bytes(bytes) => check(bytes, seed, "Box<[u8]>"),
        Item::Text(text) => {
            assert_eq!(*text, text_for(seed, text.len()), "String corrupted")
        }
        Item::Page(page) => {
            for (i, &word) in page.0.iter().enumerate() {
                assert_eq!(word, mix(seed ^ i as u64), "Box<Page> corrupted at {i}");
            }
        }
        Item::Raw(block) => check(block.bytes(), seed, "raw block"),
    }
}

/// Resizes an item in place (realloc under the hood) and re-establishes its contents.
fn grow_or_shrink(item: &mut Item, seed: u64, rng: &mut Rng) {
    match item {
        Item::Words(words) => {
            let new_len = rng.below(4096) as usize;
            if new_len < words.len() {
                words.truncate(new_len);
                words.shrink_to_fit();
            } else {
                let old = words.len() as u64;
                words.extend((old..new_len as u64).map(|i| mix(seed + i)));
            }
        }
        Item::Text(text) => {
            let target = 1 + rng.below(8192) as usize;
            *text = text_for(seed, target);
            text.shrink_to_fit();
        }
        Item::Raw(block) => block.resize(1 + rng.below(128 * 1024) as usize, seed),
        Item::Bytes(_) | Item::Page(_) => {}
    }
    verify(item, seed);
}

fn stress() {
    let (senders, receivers): (Vec<_>, Vec<_>) = (0..THREADS).map(|_| mpsc::channel::<(u64, Item)>()).unzip();
    let handles: Vec<_> = receivers
        .into_iter()
        .enumerate()
        .map(|(index, inbox)| {
            let next = senders[(index + 1) % THREADS].clone();
            thread::spawn(move || worker(index as u64, inbox, next))
        })
        .collect();
    drop(senders);
    let mut received = 0;
    for handle in handles {
        received += handle.join().expect("worker thread panicked");
    }
    assert!(
        received > THREADS as u64 * ITEMS_PER_THREAD / 10,
        "only {received} items crossed threads"
    );
    eprintln!("global allocator stress: {received} items freed or resized by another thread");
}

/// Makes items, keeps up to 256 live, sends about a third to the next thread; takes items
/// from the previous thread and verifies, resizes, keeps or drops them. Returns how many
/// items it received.
fn worker(index: u64, inbox: mpsc::Receiver<(u64, Item)>, next: mpsc::Sender<(u64, Item)>) -> u64 {
    let mut rng = Rng::new(index + 100);
    let mut live: Vec<(u64, Item)> = Vec::new();
    let mut received = 0;
    for n in 0..ITEMS_PER_THREAD {
        let seed = mix((index << 32) | n);
        let item = make_item(seed);
        verify(&item, seed);
        match rng.below(3) {
            0 => next.send((seed, item)).expect("next thread alive"),
            _ => live.push((seed, item)),
        }
        if live.len() > 256 {
            let victim = rng.below(live.len() as u64) as usize;
            let (seed, mut item) = live.swap_remove(victim);
            verify(&item, seed);
            if rng.below(2) == 0 {
                grow_or_shrink(&mut item, seed, &mut rng);
                live.push((seed, item));
            }
        }
        while let Ok((seed, mut item)) = inbox.try_recv() {
            received += 1;
            verify(&item, seed);
            match rng.below(3) {
                0 => {}
                1 => {
                    grow_or_shrink(&mut item, seed, &mut rng);
                    live.push((seed, item));
                }
                _ => live.push((seed, item)),
            }
        }
    }
    for (seed, item) in &live {
        verify(item, seed.to_owned());
    }
    drop(live);
    drop(next);
    // Drain until every sender (the previous thread) is gone.
    for (seed, item) in inbox {
        received += 1;
        verify(&item, seed);
    }
    received
}

#[test]
fn global_allocator_stress() {
    if std::env::var_os(CHILD_ENV).is_some() {
        stress();
        return;
    }
    // Parent: run the stress in a child copy of this test binary with Tally's stats on.
    let exe = std::env::current_exe().expect("test binary path");
    let mut cmd = Command::new(exe);
    cmd.args([
        "--exact",
        "global_allocator_stress",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(CHILD_ENV, "1");
    let outcome = run(cmd, Mode::Linked, DEFAULT_TIMEOUT);
    outcome.assert_success();
    assert!(
        outcome.stdout_text().contains("1 passed"),
        "the child did not run the stress test\n{}",
        outcome.dump()
    );
    outcome.assert_used_tally();
    eprintln!(
        "global allocator stress child: {:.2?}, stderr: {}",
        outcome.elapsed,
        outcome.stderr_text().trim()
    );
}
