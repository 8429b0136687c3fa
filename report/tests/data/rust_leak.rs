// The Rust program of the report tests: one leak site inside a module and an impl, so that its
// name only reads right once demangled.
mod leaky {
    pub struct Cache {
        pub blocks: Vec<Vec<u8>>,
    }

    impl Cache {
        #[inline(never)]
        pub fn fill(&mut self) {
            for _ in 0..1024 {
                self.blocks.push(vec![7u8; 4096]); // LEAK_RUST
            }
        }
    }
}

fn main() {
    let mut cache = leaky::Cache { blocks: Vec::new() };
    cache.fill();
    std::mem::forget(cache);
}
