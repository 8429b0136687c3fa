//! The measurements a child process (`child/mod.rs`) prints as one line of `name=value` words,
//! read back by the scenario that ran it.

use std::process::Output;
use std::str::FromStr;

/// One child's line of figures, from its first `name=value` word on.
pub struct Figures {
    line: String,
}

impl Figures {
    /// The figures `out` printed on the line that holds `first=`, the first of them (the harness
    /// may print "test child_entry ... " before it on the same line). Panics, with the child's
    /// output, when the child failed or printed no such line; `what` names the scenario.
    #[track_caller]
    pub fn of(what: &str, out: &Output, first: &str) -> Figures {
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{what}: child failed\n{stdout}\n{stderr}");
        let marker = format!("{first}=");
        let line = stdout
            .lines()
            .find_map(|l| l.find(&marker).map(|i| l[i..].to_string()))
            .unwrap_or_else(|| panic!("{what}: no {marker} in the child's output\n{stdout}\n{stderr}"));
        Figures { line }
    }

    /// The value of `key`; panics when it is missing or not a `T`.
    #[track_caller]
    pub fn get<T: FromStr>(&self, key: &str) -> T {
        self.line
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix(&format!("{key}=")))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {key}= in {:?}", self.line))
    }

    /// The line, for messages.
    pub fn line(&self) -> &str {
        &self.line
    }
}
