//! `docs/options.md` lists every option of the options table, with its default and meaning
//! exactly as the table has them.

#[test]
fn options_doc_lists_every_option_with_its_default() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/options.md");
    let doc = std::fs::read_to_string(path).expect("docs/options.md");
    for spec in tally::options::TABLE {
        let row = format!("| `{}` | `{}` | {} |", spec.name, spec.default, spec.doc);
        assert!(
            doc.lines().any(|l| l == row),
            "docs/options.md has no row {row:?}"
        );
    }
    let rows = doc.lines().filter(|l| l.starts_with("| `")).count();
    assert_eq!(
        rows,
        tally::options::TABLE.len(),
        "docs/options.md lists options the table does not have"
    );
}
