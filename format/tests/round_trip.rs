//! What the writer writes, the parser reads back to the same numbers; and a real dump written by
//! jemalloc 5.3 (Debian's libjemalloc2, `ls` under `prof:true,lg_prof_sample:10`) parses.
#![cfg(feature = "std")]

use proptest::prelude::*;
use tally_format::{parse, Counts, Estimate, Writer};

const MAPS: &str = "55da872e2000-55da872e6000 r--p 00000000 fe:00 247497                     /usr/bin/ls\n\
55da872e6000-55da872fc000 r-xp 00004000 fe:00 247497                     /usr/bin/ls\n\
7ffc005db000-7ffc005fc000 rw-p 00000000 00:00 0                          [stack]\n";

/// One stack's input to the writer: frames and per-sample sizes (live and cumulative).
#[derive(Clone, Debug)]
struct StackIn {
    frames: Vec<usize>,
    live: Vec<u64>,
    freed: Vec<u64>,
}

fn sum(sizes: &[u64], period: u64) -> Estimate {
    let mut e = Estimate::ZERO;
    for &z in sizes {
        e.add(Estimate::of_sample(z, period));
    }
    e
}

fn write_dump(period: u64, stacks: &[StackIn]) -> Vec<u8> {
    let mut out = Vec::new();
    let sink = |b: &[u8]| {
        out.extend_from_slice(b);
        Ok(())
    };
    let mut w = Writer::new(sink, period).unwrap();
    let (mut live, mut accum) = (Estimate::ZERO, Estimate::ZERO);
    for s in stacks {
        live.add(sum(&s.live, period));
        accum.add(sum(&s.live, period));
        accum.add(sum(&s.freed, period));
    }
    w.totals(live.to_written(period), accum.to_written(period))
        .unwrap();
    w.thread(
        1,
        live.to_written(period),
        accum.to_written(period),
        Some(b"main"),
    )
    .unwrap();
    for s in stacks {
        let l = sum(&s.live, period);
        let mut a = l;
        a.add(sum(&s.freed, period));
        w.stack_estimate(&s.frames, l, a).unwrap();
        w.stack_thread(1, l.to_written(period), a.to_written(period))
            .unwrap();
    }
    w.maps(MAPS.as_bytes()).unwrap();
    let _ = w.finish().unwrap();
    out
}

fn close(a: f64, b: f64, rel: f64) -> bool {
    (a - b).abs() <= rel * b.abs() + 1e-9
}

fn stack_strategy() -> impl Strategy<Value = StackIn> {
    (
        proptest::collection::vec(1usize..usize::MAX, 1..20),
        proptest::collection::vec(1u64..(64 << 20), 0..40),
        proptest::collection::vec(1u64..(64 << 20), 0..40),
    )
        .prop_map(|(frames, live, freed)| StackIn { frames, live, freed })
}

proptest! {
    #[test]
    fn written_dumps_read_back_to_the_same_numbers(
        lg in 0u32..30,
        stacks in proptest::collection::vec(stack_strategy(), 0..8),
    ) {
        let period = 1u64 << lg;
        let text = write_dump(period, &stacks);
        let p = parse(&text).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(p.period, period);
        prop_assert_eq!(p.stacks.len(), stacks.len());
        prop_assert_eq!(p.maps.len(), 3);
        prop_assert_eq!(p.maps_text.as_deref(), Some(MAPS));
        prop_assert_eq!(p.threads[0].name.as_deref(), Some("main"));
        for (got, want) in p.stacks.iter().zip(&stacks) {
            let frames: Vec<u64> = want.frames.iter().map(|&f| f as u64).collect();
            prop_assert_eq!(&got.frames, &frames);
            // What was written is what was read ...
            let l = sum(&want.live, period);
            prop_assert_eq!(got.live, l.to_written(period));
            prop_assert_eq!(got.threads[0].counts.live, l.to_written(period));
            // ... and jeprof's reading of it lands on Tally's estimate of the bytes, up to the
            // rounding of the written object count (see estimate.rs, step 3).
            let read = got.live_estimate(period);
            let n = got.live.objects as f64;
            let tolerance = if n == 0.0 { 0.0 } else { 1e-6 + 1.0 / n };
            prop_assert!(close(read.bytes, l.bytes, tolerance), "{:?} vs {:?}", read, l);
        }
    }
}

#[test]
fn many_samples_read_back_within_a_ten_thousandth() {
    // With many samples per stack the written integers are large and rounding fades.
    let period = 1 << 19;
    let stacks: Vec<StackIn> = (0..10)
        .map(|i| StackIn {
            frames: vec![0x401000 + i, 0x402000, 0x403000],
            live: (0..5000)
                .map(|k| 16 + (k * 7919 + i as u64 * 31) % (4 << 20))
                .collect(),
            freed: vec![],
        })
        .collect();
    let p = parse(&write_dump(period, &stacks)).unwrap();
    for (got, want) in p.stacks.iter().zip(&stacks) {
        let l = sum(&want.live, period);
        let read = got.live_estimate(period);
        assert!(close(read.bytes, l.bytes, 1e-4), "{read:?} vs {l:?}");
        assert!(close(read.objects, l.objects, 1e-3), "{read:?} vs {l:?}");
    }
}

#[test]
fn a_real_jemalloc_dump_parses() {
    let text = include_bytes!("data/jemalloc-5.3-ls.heap");
    let p = parse(text).unwrap();
    assert_eq!(p.period, 1024);
    assert_eq!(
        p.totals.live,
        Counts {
            objects: 81,
            bytes: 84163
        }
    );
    assert_eq!(p.threads.len(), 1);
    assert_eq!(p.threads[0].id, 0);
    assert_eq!(p.stacks.len(), 16);
    assert_eq!(p.stacks[0].frames.len(), 12);
    assert_eq!(p.stacks[0].frames[0], 0x7f439e2a2630);
    assert_eq!(
        p.stacks[0].live,
        Counts {
            objects: 1,
            bytes: 2066
        }
    );
    // jemalloc back-solves its totals from the summed estimates, so they are not the sum of the
    // stack lines (back-solving is not linear): 81 objects in the header, 20 over the stacks.
    let objects: u64 = p.stacks.iter().map(|s| s.live.objects).sum();
    assert_eq!(objects, 20);
    assert!(p
        .maps
        .iter()
        .any(|m| m.path == "/usr/bin/ls" && m.is_executable()));
    assert_eq!(p.maps.last().map(|m| m.path.as_str()), Some("[vsyscall]"));
    // Every frame of the main stacks lies in some mapping.
    for s in &p.stacks {
        for &f in &s.frames {
            assert!(p.mapping_for(f).is_some(), "frame {f:#x} has no mapping");
        }
    }
}
