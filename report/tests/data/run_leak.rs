// The Rust program of `tally run` end to end (run_end_to_end.rs): Rust's default allocator
// (`System`) calls malloc, which the preloaded libtally.so serves. One leak site, `leak_here`
// inside a module, keeps 32 MiB in 4 KiB blocks (vectors leaked with `Box::leak` and `mem::forget`);
// churn allocates more than that and frees all of it. It exits with code 3.
mod cache {
    #[inline(never)]
    pub fn leak_here() -> usize {
        let mut kept = 0;
        for i in 0..8192 {
            let block = vec![i as u8; 4096]; // LEAK_HERE: 32 MiB in 4 KiB blocks
            kept += block.len();
            if i % 2 == 0 {
                Box::leak(block.into_boxed_slice());
            } else {
                std::mem::forget(block);
            }
        }
        kept
    }

    #[inline(never)]
    pub fn churn() -> usize {
        let mut total = 0;
        for round in 0..1024usize {
            let batch: Vec<Box<[u8]>> = (0..64)
                .map(|i| vec![1u8; 64 + (round * 64 + i) % 4000].into_boxed_slice())
                .collect();
            total += batch.iter().map(|b| b.len()).sum::<usize>();
        }
        total
    }
}

fn main() {
    let churned = cache::churn();
    let kept = cache::leak_here();
    let churned = churned + cache::churn();
    println!("kept {kept} bytes, churned {churned}");
    std::process::exit(if kept == 32 << 20 { 3 } else { 1 });
}
