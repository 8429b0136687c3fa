//! The largest stacks of a profile, and hints about the well-known native leaks they look like.
//!
//! A report's table names functions; a leak is a stack. So `--text` and `--html` follow the table
//! with the **largest stacks**: stacks read as names ([`location_names`], so stacks that differ
//! only in addresses the names do not tell apart are one), each holding at least
//! [`MIN_SHARE`] of the total shown (the sum of the table's flat column), at most
//! [`MAX_STACKS`] of them, largest first.
//!
//! A **hint** is an entry of the bundled table `data/known-leaks.txt` (its format is written at
//! its top): a stack signature, a set of function-name patterns that must appear in the stack in
//! order from the innermost frame outward, with a title and a paragraph on the cause and the fix.
//! The table's first entry that matches a stack is that stack's hint. The patterns match the
//! names of every inline level of every frame, so a signature can name the JNI function
//! (`Java_java_util_zip_Deflater_init`) and the Java method (`java.util.zip.Deflater.<init>`, as
//! a JVM's perf map names it) alike.
//!
//! A hint is shown only for memory that matters: when the stacks it matches together hold at
//! least [`MIN_SHARE`] of the total shown, and at least [`MIN_HINT_BYTES`] when the report counts
//! bytes (a program that keeps 200 KiB at exit has no leak worth a hint, whatever its shares). It is printed under the largest stack it matches,
//! which joins the listed stacks if it was not among them (a leak whose memory is spread over
//! many stacks, as an `SSL_CTX`'s is over the dozens of allocations of `SSL_CTX_new`, still gets
//! its hint). No hint is printed for a stack it does not match, nor when what it matches is below
//! the threshold.

use std::collections::HashMap;
use std::path::Path;
use std::sync::OnceLock;

use regex::{RegexSet, SetMatches};

use crate::error::Error;
use crate::profile::{location_names, Granularity, Profile};
use crate::symbolize::{LocationId, Symbolizer};

/// The least share of the total shown that a listed stack, or the stacks of a hint, hold.
pub const MIN_SHARE: f64 = 0.10;
/// At most this many stacks are listed for their size (a hint may add its own).
pub const MAX_STACKS: usize = 3;
/// The least memory the stacks of a hint hold, when the report counts bytes: 1 MiB.
pub const MIN_HINT_BYTES: f64 = 1048576.0;

/// The bundled table.
const KNOWN_LEAKS: &str = include_str!("../data/known-leaks.txt");
/// Its name in errors.
const KNOWN_LEAKS_NAME: &str = "report/data/known-leaks.txt";

/// One entry of the table.
#[derive(Debug)]
pub struct Hint {
    /// One line: what leaks.
    pub title: String,
    /// One paragraph: why, and the fix.
    pub text: String,
    /// Per frame to find, innermost first, the index in the table's [`RegexSet`] of its
    /// alternatives (one anchored regular expression).
    frames: Vec<usize>,
    /// Frames the stack must not have, if any: the index of their expression.
    unless: Option<usize>,
}

impl Hint {
    /// Whether a stack whose names (innermost first) match the table's patterns as `names` says
    /// matches: each frame pattern in turn matches a name outward of the one the pattern before
    /// matched, and no name matches an `unless` pattern.
    fn matches(&self, names: &[&SetMatches]) -> bool {
        if let Some(unless) = self.unless {
            if names.iter().any(|name| name.matched(unless)) {
                return false;
            }
        }
        let mut from = 0;
        for &pattern in &self.frames {
            match names[from..].iter().position(|name| name.matched(pattern)) {
                Some(i) => from += i + 1,
                None => return false,
            }
        }
        true
    }
}

/// A table of hints, in the order they are tried.
#[derive(Debug)]
pub struct Hints {
    /// The entries.
    pub entries: Vec<Hint>,
    /// Every pattern line of every entry, so that a name is matched against all at once.
    patterns: RegexSet,
}

impl Hints {
    /// Parses a table in the format of `data/known-leaks.txt`; errors name `name` and the line.
    pub fn parse(text: &str, name: &str) -> Result<Hints, Error> {
        let error = |line: usize, message: String| Error::at(Path::new(name), line, message);
        let mut entries: Vec<Hint> = Vec::new();
        // The line where the current entry started, and whether its paragraph has started.
        let mut started = 0;
        let mut in_text = false;
        let mut unless: Vec<String> = Vec::new();
        let mut sources: Vec<String> = Vec::new();
        let finish =
            |entries: &mut Vec<Hint>, unless: &mut Vec<String>, sources: &mut Vec<String>, started: usize| {
                let Some(hint) = entries.last_mut() else {
                    return Ok(());
                };
                if hint.frames.is_empty() {
                    return Err(error(started, "an entry without a `frame:` line".into()));
                }
                if hint.text.is_empty() {
                    return Err(error(started, "an entry without its paragraph".into()));
                }
                if !unless.is_empty() {
                    hint.unless = Some(sources.len());
                    sources.push(alternatives(unless));
                    unless.clear();
                }
                Ok(())
            };
        for (i, line) in text.lines().enumerate() {
            let number = i + 1;
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let key = |key: &str| line.strip_prefix(key).map(str::trim);
            if let Some(title) = key("hint:") {
                finish(&mut entries, &mut unless, &mut sources, started)?;
                if title.is_empty() {
                    return Err(error(number, "`hint:` without a title".into()));
                }
                entries.push(Hint {
                    title: title.to_string(),
                    text: String::new(),
                    frames: Vec::new(),
                    unless: None,
                });
                started = number;
                in_text = false;
                continue;
            }
            let Some(hint) = entries.last_mut() else {
                return Err(error(number, "expected `hint: TITLE` to start an entry".into()));
            };
            let patterns = key("frame:")
                .map(|p| (p, false))
                .or(key("unless:").map(|p| (p, true)));
            match patterns {
                Some((patterns, is_unless)) => {
                    if in_text {
                        return Err(error(
                            number,
                            "a `frame:` or `unless:` line after the paragraph started".into(),
                        ));
                    }
                    let patterns: Vec<String> = patterns.split_whitespace().map(str::to_string).collect();
                    if patterns.is_empty() {
                        return Err(error(number, "no pattern on the line".into()));
                    }
                    if is_unless {
                        unless.extend(patterns);
                    } else {
                        hint.frames.push(sources.len());
                        sources.push(alternatives(&patterns));
                    }
                }
                None => {
                    in_text = true;
                    if !hint.text.is_empty() {
                        hint.text.push(' ');
                    }
                    hint.text.push_str(line);
                }
            }
        }
        finish(&mut entries, &mut unless, &mut sources, started)?;
        if entries.is_empty() {
            return Err(Error::file(Path::new(name), "no entries"));
        }
        let patterns = RegexSet::new(&sources).expect("escaped patterns are valid");
        Ok(Hints { entries, patterns })
    }

    /// Which of the table's patterns `name` matches (what [`Self::matching_patterns`] takes).
    pub fn patterns_of(&self, name: &str) -> SetMatches {
        self.patterns.matches(name)
    }

    /// The index of the first entry that a stack matches, given what each of its names matches
    /// ([`Self::patterns_of`]), innermost first.
    pub fn matching_patterns(&self, names: &[&SetMatches]) -> Option<usize> {
        self.entries.iter().position(|hint| hint.matches(names))
    }

    /// The first entry that a stack with these function names (innermost first) matches.
    pub fn matching(&self, functions: &[&str]) -> Option<&Hint> {
        let matches: Vec<SetMatches> = functions.iter().map(|f| self.patterns_of(f)).collect();
        let names: Vec<&SetMatches> = matches.iter().collect();
        self.matching_patterns(&names).map(|i| &self.entries[i])
    }
}

/// The patterns as one regular expression that matches a whole name matching any of them.
fn alternatives(patterns: &[String]) -> String {
    let parts: Vec<String> = patterns
        .iter()
        .map(|pattern| {
            pattern
                .split('*')
                .map(regex::escape)
                .collect::<Vec<_>>()
                .join(".*")
        })
        .collect();
    format!("^(?:{})$", parts.join("|"))
}

/// The bundled table (`data/known-leaks.txt`), parsed on first use.
pub fn known() -> &'static Hints {
    static KNOWN: OnceLock<Hints> = OnceLock::new();
    KNOWN.get_or_init(|| {
        Hints::parse(KNOWN_LEAKS, KNOWN_LEAKS_NAME).expect("the bundled table parses (a unit test checks)")
    })
}

/// The function names of a stack, innermost first, one per inline level: what hints match.
pub fn functions<'a>(stack: &[LocationId], symbolizer: &'a Symbolizer) -> Vec<&'a str> {
    stack
        .iter()
        .flat_map(|&id| symbolizer.location(id).frames.iter().map(|f| f.function.as_str()))
        .collect()
}

/// A hint as shown under a stack.
#[derive(Debug, Clone, Copy)]
pub struct ShownHint<'h> {
    /// The entry.
    pub hint: &'h Hint,
    /// How many of the profile's stacks it matches.
    pub stacks: usize,
    /// Their value together.
    pub value: f64,
}

/// A listed stack.
#[derive(Debug, Clone)]
pub struct Stack<'h> {
    /// Its names, innermost first.
    pub names: Vec<String>,
    /// Its value.
    pub value: f64,
    /// Its hint, when it has one to show.
    pub hint: Option<ShownHint<'h>>,
}

/// The stacks worth listing in `profile` (module docs), largest first, with their hints from
/// `hints` where what a hint matches holds at least `min_hint_value` too.
pub fn largest<'h>(
    profile: &Profile,
    symbolizer: &Symbolizer,
    granularity: Granularity,
    hints: &'h Hints,
    min_hint_value: f64,
) -> Vec<Stack<'h>> {
    let shown = profile.total();
    if shown <= 0.0 {
        return Vec::new();
    }
    // Per location, its names and which patterns each of its functions matches.
    let mut locations: HashMap<LocationId, (Vec<String>, Vec<SetMatches>)> = HashMap::new();
    // Stacks that read alike are one: (names, value, index of its hint).
    let mut by_names: HashMap<Vec<String>, (f64, Option<usize>)> = HashMap::new();
    for (stack, &value) in &profile.stacks {
        for &id in stack {
            locations.entry(id).or_insert_with(|| {
                let location = symbolizer.location(id);
                let matches = location
                    .frames
                    .iter()
                    .map(|f| hints.patterns_of(&f.function))
                    .collect();
                (location_names(location, granularity), matches)
            });
        }
        let names: Vec<String> = stack
            .iter()
            .flat_map(|id| locations[id].0.iter().cloned())
            .collect();
        let entry = by_names.entry(names).or_insert_with(|| {
            let matches: Vec<&SetMatches> = stack.iter().flat_map(|id| locations[id].1.iter()).collect();
            (0.0, hints.matching_patterns(&matches))
        });
        entry.0 += value;
    }
    let mut stacks: Vec<(Vec<String>, f64, Option<usize>)> = by_names
        .into_iter()
        .map(|(names, (value, hint))| (names, value, hint))
        .collect();
    stacks.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    // Per hint: the stacks it matches and their value.
    let mut per_hint: HashMap<usize, (usize, f64)> = HashMap::new();
    for (_, value, hint) in &stacks {
        if let Some(hint) = hint {
            let entry = per_hint.entry(*hint).or_insert((0, 0.0));
            entry.0 += 1;
            entry.1 += value.max(0.0);
        }
    }
    let threshold = MIN_SHARE * shown;
    let shown_hint = |hint: Option<usize>| {
        hint.and_then(|i| {
            let (count, value) = per_hint[&i];
            (value >= threshold && value >= min_hint_value).then_some((i, count, value))
        })
    };
    let mut listed: Vec<usize> = (0..stacks.len())
        .take_while(|&i| stacks[i].1 >= threshold)
        .take(MAX_STACKS)
        .collect();
    let mut with_hint: Vec<usize> = listed.iter().filter_map(|&i| stacks[i].2).collect();
    // A hint over the threshold whose stacks are each below it: its largest stack too.
    for (i, (_, _, hint)) in stacks.iter().enumerate() {
        if let Some((h, _, _)) = shown_hint(*hint) {
            if !with_hint.contains(&h) {
                with_hint.push(h);
                listed.push(i);
            }
        }
    }
    listed
        .into_iter()
        .map(|i| {
            let (names, value, hint) = &stacks[i];
            Stack {
                names: names.clone(),
                value: *value,
                hint: shown_hint(*hint).map(|(h, stacks, value)| ShownHint {
                    hint: &hints.entries[h],
                    stacks,
                    value,
                }),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn title(functions: &[&str]) -> Option<&'static str> {
        known().matching(functions).map(|hint| hint.title.as_str())
    }

    /// A profile of stacks of unknown addresses, innermost first in hexadecimal (`"a1 c"`; each
    /// frame prints as its `0x…` label), with their values.
    fn profile_of(stacks: &[(&str, f64)]) -> (Profile, Symbolizer) {
        let mut symbolizer = Symbolizer::new(Default::default());
        let map = crate::memory_map::MemoryMap::new(&[]);
        let mut profile = Profile::default();
        for (addresses, value) in stacks {
            let stack = addresses
                .split(' ')
                .map(|a| symbolizer.symbolize(&map, u64::from_str_radix(a, 16).unwrap()))
                .collect();
            profile.stacks.insert(stack, *value);
        }
        (profile, symbolizer)
    }

    #[test]
    fn listed_stacks_and_hints_hold_a_real_share() {
        let hints = Hints::parse("hint: leaky\nframe: 0xa*\nframe: 0xc\nThe text.\n", "t.txt").unwrap();
        let (profile, symbolizer) = profile_of(&[
            ("b1 c", 50.0),
            ("a1 c", 30.0),
            ("a2 d", 9.0),
            ("a3 c", 9.0),
            ("b2", 2.0),
        ]);
        let stacks = largest(&profile, &symbolizer, Granularity::Functions, &hints, 0.0);
        let listed: Vec<(String, f64, Option<usize>)> = stacks
            .iter()
            .map(|s| (s.names.join(" "), s.value, s.hint.map(|h| h.stacks)))
            .collect();
        assert_eq!(
            listed,
            [
                ("0xb1 0xc".into(), 50.0, None),
                ("0xa1 0xc".into(), 30.0, Some(2))
            ]
        );
        assert_eq!(stacks[1].hint.unwrap().value, 39.0);

        // Each matching stack below 10%, together above: the largest of them is listed with the
        // hint. Below 10% together: no hint.
        let (profile, symbolizer) = profile_of(&[("b1", 80.0), ("a1 c", 6.0), ("a2 c", 5.0), ("a3 d", 9.0)]);
        let stacks = largest(&profile, &symbolizer, Granularity::Functions, &hints, 0.0);
        assert_eq!(stacks.len(), 2);
        assert_eq!(
            (stacks[1].names.join(" ").as_str(), stacks[1].value),
            ("0xa1 0xc", 6.0)
        );
        assert_eq!(stacks[1].hint.map(|h| (h.stacks, h.value)), Some((2, 11.0)));
        // Less than the least value a hint needs: neither the hint nor its stack.
        let stacks = largest(&profile, &symbolizer, Granularity::Functions, &hints, 12.0);
        assert_eq!(stacks.len(), 1);
        assert!(stacks[0].hint.is_none());
        let (profile, symbolizer) = profile_of(&[("b1", 91.0), ("a1 c", 9.0)]);
        let stacks = largest(&profile, &symbolizer, Granularity::Functions, &hints, 0.0);
        assert_eq!(stacks.len(), 1);
        assert!(stacks[0].hint.is_none());

        // At most three listed for their size; nothing when the total is not positive.
        let (profile, symbolizer) = profile_of(&[("1", 25.0), ("2", 25.0), ("3", 25.0), ("4", 25.0)]);
        assert_eq!(
            largest(&profile, &symbolizer, Granularity::Functions, &hints, 0.0).len(),
            3
        );
        let (profile, symbolizer) = profile_of(&[("1", 5.0), ("2", -5.0)]);
        assert!(largest(&profile, &symbolizer, Granularity::Functions, &hints, 0.0).is_empty());
    }

    #[test]
    fn the_bundled_table_parses() {
        let hints = Hints::parse(KNOWN_LEAKS, KNOWN_LEAKS_NAME).unwrap();
        assert!(hints.entries.len() >= 10, "{}", hints.entries.len());
        for hint in &hints.entries {
            assert!(!hint.title.is_empty() && !hint.frames.is_empty());
            assert!(
                hint.text.len() > 100 && hint.text.ends_with('.'),
                "{}",
                hint.title
            );
            assert!(
                !hint.title.contains("  ") && !hint.text.contains("  "),
                "{}",
                hint.title
            );
        }
    }

    #[test]
    fn bad_tables_are_one_line_errors() {
        let cases = [
            ("frame: x\n", 1, "expected `hint: TITLE`"),
            ("hint: a\nText.\n", 1, "without a `frame:` line"),
            ("hint: a\nframe: x\n", 1, "without its paragraph"),
            (
                "\n# c\nhint: a\nframe: x\nText.\nframe: y\n",
                6,
                "after the paragraph",
            ),
            ("hint: a\nframe:\n", 2, "no pattern"),
            ("hint:\n", 1, "without a title"),
        ];
        for (text, line, message) in cases {
            let e = Hints::parse(text, "t.txt").unwrap_err();
            assert_eq!(e.line, Some(line), "{text:?}: {e}");
            assert!(e.to_string().starts_with(&format!("t.txt:{line}: ")), "{e}");
            assert!(e.message.contains(message), "{text:?}: {e}");
        }
        assert_eq!(
            Hints::parse("# only\n", "t.txt").unwrap_err().to_string(),
            "t.txt: no entries"
        );
    }

    #[test]
    fn patterns_are_whole_names_with_stars_in_order() {
        let hints = Hints::parse(
            "hint: t\nframe: inner*\nframe: a.b.C.<init> other\nunless: *init_once\nThe text.\n",
            "t.txt",
        )
        .unwrap();
        let hint = |functions: &[&str]| hints.matching(functions).is_some();
        assert!(hint(&["inner2", "x", "a.b.C.<init>", "main"]));
        assert!(hint(&["innermost", "other"]));
        // The order: the caller must be outward of the callee.
        assert!(!hint(&["a.b.C.<init>", "inner"]));
        assert!(!hint(&["inner"]));
        // Whole names, and `.` is no wildcard.
        assert!(!hint(&["xinner", "a.b.C.<init>"]));
        assert!(!hint(&["inner", "a.b.C.<init>x"]));
        assert!(!hint(&["inner", "aXb.C.<init>"]));
        assert!(!hint(&["inner", "other", "run_init_once"]));
    }

    #[test]
    fn java_zlib_streams_by_jni_or_java_names() {
        const DEFLATER: &str =
            "java.util.zip.Deflater not ended (GZIPOutputStream or DeflaterOutputStream not closed)";
        // Today's native stack: it stops at the JNI function, the rest is JIT code.
        assert_eq!(
            title(&[
                "deflateInit2_",
                "Java_java_util_zip_Deflater_init",
                "0x7f3a2c01b2e4"
            ]),
            Some(DEFLATER)
        );
        // With the Java frames named from a perf map.
        assert_eq!(
            title(&[
                "deflateInit2_",
                "java.util.zip.Deflater.init",
                "java.util.zip.Deflater.<init>",
                "java.util.zip.GZIPOutputStream.<init>",
                "GzipLogger.logLeaky",
                "[java interpreter]",
            ]),
            Some(DEFLATER)
        );
        let inflater = title(&["inflateInit2_", "Java_java_util_zip_Inflater_init", "0x7f00"]).unwrap();
        assert!(
            inflater.starts_with("java.util.zip.Inflater not ended"),
            "{inflater}"
        );
        // A ZipFile's entry streams: their Inflaters, under ZipFile.
        let zip = title(&[
            "inflateInit2_",
            "Java_java_util_zip_Inflater_init",
            "java.util.zip.Inflater.<init>",
            "java.util.zip.ZipFile$CleanableResource.getInflater",
            "java.util.zip.ZipFile.getInputStream",
        ])
        .unwrap();
        assert!(zip.starts_with("java.util.zip.ZipFile or JarFile"), "{zip}");
        assert!(title(&["ZIP_Open_Generic", "Java_java_util_zip_ZipFile_open"])
            .unwrap()
            .starts_with("java.util.zip.ZipFile"));
        // Near misses: zlib from C gets zlib's hint, not the Java one; the order matters.
        assert_eq!(
            title(&["deflateInit2_", "compress_block", "main"]),
            Some("zlib deflate streams not ended (deflateEnd)")
        );
        assert_eq!(
            title(&["inflateInit_", "main"]),
            Some("zlib inflate streams not ended (inflateEnd)")
        );
        assert_eq!(
            title(&["Java_java_util_zip_Deflater_init", "deflateInit2_"]),
            Some("zlib deflate streams not ended (deflateEnd)")
        );
        assert_eq!(
            title(&["deflate", "Java_java_util_zip_Deflater_deflateBytesBytes"]),
            None
        );
    }

    #[test]
    fn direct_buffers_openssl_and_python() {
        let direct = |f: &[&str]| title(f).is_some_and(|t| t.starts_with("direct ByteBuffers"));
        assert!(direct(&[
            "os::malloc(unsigned long, MEMFLAGS, NativeCallStack const&)",
            "Unsafe_AllocateMemory0",
            "0x7f1234",
        ]));
        assert!(direct(&[
            "jdk.internal.misc.Unsafe.allocateMemory0",
            "java.nio.DirectByteBuffer.<init>"
        ]));
        assert!(!direct(&[
            "os::malloc(unsigned long, MEMFLAGS, NativeCallStack const&)",
            "JVM_Foo"
        ]));

        assert_eq!(
            title(&[
                "CRYPTO_zalloc",
                "SSL_CTX_new_ex",
                "SSL_CTX_new",
                "open_connection",
                "main"
            ]),
            Some("OpenSSL SSL_CTX not freed (SSL_CTX_free)")
        );
        assert_eq!(
            title(&["CRYPTO_malloc", "SSL_new", "open_connection"]),
            Some("OpenSSL SSL objects not freed (SSL_free)")
        );
        assert_eq!(
            title(&["CRYPTO_zalloc", "EVP_MD_CTX_new", "main"]),
            Some("OpenSSL EVP contexts not freed (EVP_*_CTX_free)")
        );
        // OpenSSL's process-wide state, set up on the first SSL_CTX_new, is no leak.
        assert_eq!(
            title(&[
                "CRYPTO_zalloc",
                "ossl_init_ssl_base",
                "CRYPTO_THREAD_run_once",
                "OPENSSL_init_ssl",
                "SSL_CTX_new_ex"
            ]),
            None
        );
        assert_eq!(
            title(&[
                "CRYPTO_zalloc",
                "inner_evp_generic_fetch",
                "EVP_MD_fetch",
                "EVP_DigestInit_ex",
                "main"
            ]),
            None
        );

        let python = |f: &[&str]| title(f).is_some_and(|t| t.starts_with("Python objects"));
        assert!(python(&[
            "PyObject_Malloc",
            "PyDict_New",
            "_PyEval_EvalFrameDefault",
            "PyEval_EvalCode"
        ]));
        // Debian's python3 names only its exported functions.
        assert!(python(&[
            "python3.11+0x50046f",
            "python3.11+0x508bef",
            "_PyEval_EvalFrameDefault"
        ]));
        // Allocation with no Python code running it, or running the import machinery.
        assert!(!python(&[
            "_PyObject_GC_New",
            "PyList_New",
            "Py_InitializeFromConfig",
            "main"
        ]));
        assert!(!python(&[
            "PyObject_Malloc",
            "_PyEval_EvalFrameDefault",
            "PyImport_ImportModuleLevelObject"
        ]));
        // OpenSSL called from Python (its ssl module) is OpenSSL's leak.
        assert_eq!(
            title(&["CRYPTO_zalloc", "SSL_new", "_PyEval_EvalFrameDefault"]),
            Some("OpenSSL SSL objects not freed (SSL_free)")
        );
        assert_eq!(title(&["malloc_here", "main"]), None);
        assert_eq!(title(&[]), None);
    }
}
