//! The one error type of the report tool. Every error prints as exactly one line,
//! `FILE:LINE: what is wrong` (or `FILE: …` when no line applies), and makes `tally` exit with
//! code 2; `main` adds the `tally: ` prefix.

use std::fmt;
use std::path::{Path, PathBuf};

/// An error that stops a report: a file that cannot be read, is not a dump, or is damaged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    /// The file at fault, if a file is at fault.
    pub path: Option<PathBuf>,
    /// The 1-based line of that file, if the fault is on a line.
    pub line: Option<usize>,
    /// What is wrong, in a few words (never more than one line once displayed).
    pub message: String,
}

impl Error {
    /// An error that concerns no file in particular (a bad option, say).
    pub fn new(message: impl Into<String>) -> Error {
        Error {
            path: None,
            line: None,
            message: message.into(),
        }
    }

    /// An error about `path` as a whole.
    pub fn file(path: &Path, message: impl Into<String>) -> Error {
        Error {
            path: Some(path.to_path_buf()),
            line: None,
            message: message.into(),
        }
    }

    /// An error on line `line` (1-based) of `path`.
    pub fn at(path: &Path, line: usize, message: impl Into<String>) -> Error {
        Error {
            path: Some(path.to_path_buf()),
            line: Some(line),
            message: message.into(),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.path, self.line) {
            (Some(path), Some(line)) => write!(f, "{}:{}: ", path.display(), line)?,
            (Some(path), None) => write!(f, "{}: ", path.display())?,
            _ => {}
        }
        f.write_str(&one_line(&self.message))
    }
}

impl std::error::Error for Error {}

/// `text` with every control character (newlines included) replaced, so that it prints as part of
/// one line.
pub fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// A short, printable excerpt of untrusted input for an error message: at most `max` characters,
/// escaped, quoted.
pub fn excerpt(bytes: &[u8], max: usize) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut out: String = text.chars().take(max).collect();
    if text.chars().count() > max {
        out.push('…');
    }
    format!("{:?}", out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn displays_file_and_line_on_one_line() {
        let e = Error::at(Path::new("a.heap"), 3, "bad\nthing");
        assert_eq!(e.to_string(), "a.heap:3: bad thing");
        assert_eq!(Error::file(Path::new("x"), "gone").to_string(), "x: gone");
        assert_eq!(excerpt(b"ab\ncd", 3), "\"ab\\n…\"");
    }
}
