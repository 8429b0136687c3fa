//! A Rust `BTreeMap` whose keys and values are 24 bytes (`String`, `Vec<u8>`) allocates leaf
//! nodes of 544 bytes and internal nodes of 640: Tally's class of 576 bytes holds the leaves
//! with 32 bytes to spare, where the next class, 640, wasted 96 (a million entries built in
//! order: 167 MiB peak RSS, 158 with the class; docs/benchmarks.md, tenth pass).

use std::alloc::{GlobalAlloc, Layout};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Tally, counting what it is asked for and what it gives, for the blocks of nodes' sizes.
struct Counting;

/// Blocks above this size are the map's nodes (keys are 8 bytes, values at most 63).
const NODE_MIN: usize = 256;

static ASKED: AtomicUsize = AtomicUsize::new(0);
static GIVEN: AtomicUsize = AtomicUsize::new(0);
static NODES: AtomicUsize = AtomicUsize::new(0);
/// Node-sized requests by size in 8-byte steps, up to 4 KiB.
static BY_SIZE: [AtomicUsize; 512] = [const { AtomicUsize::new(0) }; 512];

// SAFETY: forwards every call to Tally unchanged.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract is Tally's.
        let p = unsafe { tally::Tally.alloc(layout) };
        if !p.is_null() && layout.size() > NODE_MIN {
            ASKED.fetch_add(layout.size(), Ordering::Relaxed);
            GIVEN.fetch_add(tally::api::malloc_usable_size(p.cast()), Ordering::Relaxed);
            NODES.fetch_add(1, Ordering::Relaxed);
            if let Some(count) = BY_SIZE.get(layout.size() / 8) {
                count.fetch_add(1, Ordering::Relaxed);
            }
        }
        p
    }

    unsafe fn dealloc(&self, p: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { tally::Tally.dealloc(p, layout) }
    }
}

#[global_allocator]
static A: Counting = Counting;

#[test]
fn btree_nodes_of_24_byte_keys_and_values_waste_under_6_percent() {
    let before = (ASKED.load(Ordering::Relaxed), GIVEN.load(Ordering::Relaxed));
    let nodes_before = NODES.load(Ordering::Relaxed);
    let mut map = BTreeMap::new();
    for index in 0..20_000u64 {
        map.insert(
            format!("{index:08}"),
            vec![index as u8; 16 + (index % 48) as usize],
        );
    }
    let asked = ASKED.load(Ordering::Relaxed) - before.0;
    let given = GIVEN.load(Ordering::Relaxed) - before.1;
    let nodes = NODES.load(Ordering::Relaxed) - nodes_before;
    assert!(
        nodes > 2000,
        "{nodes} node allocations: the map's nodes are not above {NODE_MIN} B"
    );
    // Leaves (544 B) are most of the nodes: 576 B each is 5.9% more; 640 B was 17.6% more.
    assert!(
        given * 100 < asked * 106,
        "the map's {nodes} nodes asked for {asked} bytes and got {given} ({:.1}% more)",
        (given as f64 / asked as f64 - 1.0) * 100.0
    );
    // The most common node size is the leaf's: a parent pointer, an index and a length, 11 keys
    // and 11 values.
    let leaf = (0..BY_SIZE.len())
        .max_by_key(|&i| BY_SIZE[i].load(Ordering::Relaxed))
        .unwrap()
        * 8;
    assert_eq!(leaf, 544, "leaves of this Rust's BTreeMap<String, Vec<u8>>");
    let p = tally::api::malloc(leaf);
    assert_eq!(tally::api::malloc_usable_size(p), 576, "the class of a leaf");
    // SAFETY: `p` came from `malloc` above.
    unsafe { tally::api::free(p) };
    drop(map);
}
