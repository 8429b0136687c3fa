//! The parser never panics: random bytes, and valid dumps cut, spliced and mutated.
#![cfg(feature = "std")]

use proptest::prelude::*;
use tally_format::parse;

const VALID: &[u8] = include_bytes!("data/jemalloc-5.3-ls.heap");

proptest! {
    #![proptest_config(ProptestConfig { cases: 4000, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = parse(&bytes);
    }

    #[test]
    fn random_lines_from_the_grammar(lines in proptest::collection::vec(
        prop_oneof![
            Just("heap_v2/524288".to_string()),
            Just("  t*: 1: 2 [3: 4]".to_string()),
            Just("  t7: 1: 2 [3: 4] name".to_string()),
            Just("@ 0x1 0x2".to_string()),
            Just("@".to_string()),
            Just(String::new()),
            Just("MAPPED_LIBRARIES:".to_string()),
            Just("00400000-00452000 r-xp 00000000 08:02 173521 /usr/bin/dbus-daemon".to_string()),
            "[ -~]{0,40}",
        ],
        0..30,
    )) {
        let text = lines.join("\n");
        let _ = parse(text.as_bytes());
    }

    #[test]
    fn mutated_valid_dump(
        cut in 0..VALID.len(),
        edits in proptest::collection::vec((0..VALID.len(), any::<u8>()), 0..8),
    ) {
        let mut bytes = VALID.to_vec();
        for (at, b) in edits {
            bytes[at] = b;
        }
        let _ = parse(&bytes);
        let _ = parse(&bytes[..cut]);
        let _ = parse(&bytes[cut..]);
    }
}

#[test]
fn every_prefix_of_a_valid_dump() {
    for cut in 0..VALID.len() {
        let _ = parse(&VALID[..cut]);
    }
}
