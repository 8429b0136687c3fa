//! The layer order written at the top of each crate's `lib.rs` is the code's: every module uses
//! only modules listed above it (no upward imports, no circles, no sibling imports), and every
//! module of the crate is in the list. The test reads the numbered list (`//! 3. `name` — ...`)
//! and every `crate::` path in each module's code, comments left out.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use tally_tests::workspace_root;

/// Module name -> its place in the order, from the numbered list in `lib.rs`'s doc comment.
fn written_order(lib_rs: &str) -> BTreeMap<String, usize> {
    let mut order = BTreeMap::new();
    for line in lib_rs.lines() {
        let Some(item) = line.strip_prefix("//! ") else {
            continue;
        };
        let Some((number, rest)) = item.split_once(". ") else {
            continue;
        };
        let Ok(level) = number.trim().parse::<usize>() else {
            continue;
        };
        // The names are the backticked words before the dash that starts the description.
        let names = rest.split(" — ").next().unwrap_or("");
        for (i, part) in names.split('`').enumerate() {
            if i % 2 == 1 {
                assert!(
                    order.insert(part.to_string(), level).is_none(),
                    "`{part}` listed twice"
                );
            }
        }
    }
    order
}

/// The code of a file without its comments (line comments and doc comments).
fn code_of(text: &str) -> String {
    text.lines()
        .map(|line| match line.find("//") {
            // A `//` inside a string literal ("http://...") is rare in this code base and would
            // only hide imports after it on that line.
            Some(i) => &line[..i],
            None => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The first path segment of every `crate::` path in `code`, with `crate::{a, b::c}` groups
/// split (nested braces included).
fn crate_paths(code: &str) -> Vec<String> {
    let mut found = Vec::new();
    let bytes = code.as_bytes();
    let mut at = 0;
    while let Some(i) = code[at..].find("crate::") {
        let start = at + i;
        at = start + "crate::".len();
        // `$crate::` and `tally_crate::` are not this crate's paths.
        if start > 0
            && (bytes[start - 1].is_ascii_alphanumeric()
                || bytes[start - 1] == b'_'
                || bytes[start - 1] == b'$')
        {
            continue;
        }
        if bytes.get(at) == Some(&b'{') {
            let mut depth = 0;
            let mut item = String::new();
            let mut items = Vec::new();
            for &b in &bytes[at..] {
                match b {
                    b'{' => {
                        depth += 1;
                        if depth == 1 {
                            continue;
                        }
                    }
                    b'}' => {
                        depth -= 1;
                        if depth == 0 {
                            items.push(std::mem::take(&mut item));
                            break;
                        }
                    }
                    b',' if depth == 1 => {
                        items.push(std::mem::take(&mut item));
                        continue;
                    }
                    _ => {}
                }
                item.push(b as char);
            }
            for item in items {
                let name: String = item
                    .trim()
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() {
                    found.push(name);
                }
            }
        } else {
            let name: String = code[at..]
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                found.push(name);
            }
        }
    }
    found
}

/// Each module of the crate at `src` (a file `x.rs`, or a folder `x/`) with its code.
fn modules(src: &Path) -> BTreeMap<String, String> {
    let mut modules = BTreeMap::new();
    for entry in fs::read_dir(src).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        if name == "lib" || name == "main" {
            continue;
        }
        let mut code = String::new();
        if path.is_dir() {
            for file in walk(&path) {
                code += &code_of(&fs::read_to_string(file).unwrap());
                code.push('\n');
            }
        } else if path.extension().is_some_and(|e| e == "rs") {
            code = code_of(&fs::read_to_string(&path).unwrap());
        } else {
            continue;
        }
        modules.insert(name, code);
    }
    modules
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files
}

/// Fails with every import of the crate at `dir` that goes against its written order.
fn assert_follows_its_layers(dir: &str) {
    let wrong = violations(dir);
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// Every import of the crate at `dir` that goes against its written order.
fn violations(dir: &str) -> Vec<String> {
    violations_in(&workspace_root().join(dir).join("src"), dir)
}

/// Every import of the crate whose sources are at `src` that goes against its written order.
fn violations_in(src: &Path, dir: &str) -> Vec<String> {
    let order = written_order(&fs::read_to_string(src.join("lib.rs")).unwrap());
    assert!(order.len() >= 3, "{dir}/src/lib.rs writes no layer list");
    let mut wrong = Vec::new();
    for (module, code) in modules(src) {
        let Some(&level) = order.get(&module) else {
            wrong.push(format!(
                "{dir}: module `{module}` is not in the layer list of lib.rs"
            ));
            continue;
        };
        for used in crate_paths(&code) {
            if used == module || used == "self" || used == "super" {
                continue;
            }
            match order.get(&used) {
                Some(&other) if other < level => {}
                Some(&other) => wrong.push(format!(
                    "{dir}: `{module}` (layer {level}) uses `{used}` (layer {other}), which is not below it"
                )),
                // Items of lib.rs itself (re-exports, constants): the crate's top.
                None => wrong.push(format!(
                    "{dir}: `{module}` uses `crate::{used}`, which is not a listed module (items of lib.rs are above every module)"
                )),
            }
        }
    }
    wrong
}

#[test]
fn path_parser_finds_groups_and_plain_paths() {
    let code = code_of(
        "use crate::a::B;\nuse crate::{b, c::{D, E}, self as f};\nlet x = crate::d::f(); // crate::comment\n$crate::m!(); tally_crate::x;",
    );
    assert_eq!(crate_paths(&code), ["a", "b", "c", "self", "d"]);
    let order = written_order("//! 1. `a` — x\n//! 2. `b`, `c` — y\n//! not 3. `z`\n");
    assert_eq!(order.len(), 3);
    assert_eq!(order["c"], 2);
}

#[test]
fn the_allocator_follows_its_layers() {
    assert_follows_its_layers("allocator");
}

#[test]
fn the_platform_layer_follows_its_layers() {
    assert_follows_its_layers("pal");
}

#[test]
fn the_profiler_follows_its_layers() {
    assert_follows_its_layers("profiler");
}

#[test]
fn the_report_tool_follows_its_layers() {
    assert_follows_its_layers("report");
}

#[test]
fn a_violation_is_reported() {
    // The checker itself: an upward import in a made-up crate is found.
    let dir = std::env::temp_dir().join(format!("tally-layers-{}", std::process::id()));
    let src = dir.join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(
        src.join("lib.rs"),
        "//! 1. `low` — a\n//! 2. `mid` — b\n//! 3. `high` — c\n",
    )
    .unwrap();
    fs::write(src.join("low.rs"), "use crate::high::X;\n").unwrap();
    fs::write(src.join("mid.rs"), "use crate::low::Y;\n").unwrap();
    fs::write(src.join("high.rs"), "use crate::{mid, low};\n").unwrap();
    fs::write(src.join("stray.rs"), "\n").unwrap();
    let mut wrong = violations_in(&src, "made-up");
    fs::remove_dir_all(&dir).unwrap();
    wrong.sort();
    assert_eq!(wrong.len(), 2, "{wrong:?}");
    assert!(
        wrong[0].contains("`low` (layer 1) uses `high` (layer 3)"),
        "{wrong:?}"
    );
    assert!(
        wrong[1].contains("module `stray` is not in the layer list"),
        "{wrong:?}"
    );
}
