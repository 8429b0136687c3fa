//! Diagnostics on stderr without allocating.

use core::fmt::{self, Write};
use core::sync::atomic::{AtomicI32, Ordering};

/// The descriptor Tally writes diagnostics to: 2, or a private duplicate of it.
static STDERR_FD: AtomicI32 = AtomicI32::new(2);

/// Keeps a private, close-on-exec duplicate of stderr for messages printed at exit, so that a
/// program closing fd 2 before it exits does not silence them.
pub fn keep_stderr() {
    // SAFETY: F_DUPFD_CLOEXEC only creates a new descriptor.
    let fd = unsafe { libc::fcntl(2, libc::F_DUPFD_CLOEXEC, 100) };
    if fd >= 0 {
        STDERR_FD.store(fd, Ordering::Relaxed);
    }
}

/// Writes all of `bytes` to stderr, retrying short writes; errors are ignored (there is nowhere
/// left to report them).
pub fn write_stderr(bytes: &[u8]) {
    let _ = crate::file::write_all(STDERR_FD.load(Ordering::Relaxed), bytes);
}

/// A fixed-capacity text buffer for messages built inside `malloc`: formatting into it never
/// allocates; text past the capacity is cut off.
pub struct LineBuf {
    buf: [u8; 512],
    len: usize,
}

impl LineBuf {
    /// An empty buffer.
    pub const fn new() -> Self {
        LineBuf {
            buf: [0; 512],
            len: 0,
        }
    }

    /// The text written so far.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl Default for LineBuf {
    fn default() -> Self {
        Self::new()
    }
}

impl Write for LineBuf {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let room = self.buf.len() - self.len;
        let n = s.len().min(room);
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

/// Formats a message without allocating and writes it to stderr.
pub fn print(args: fmt::Arguments<'_>) {
    let mut line = LineBuf::new();
    let _ = line.write_fmt(args);
    write_stderr(line.as_bytes());
}

/// Prints a one-line message to stderr and aborts the process. Used for errors that must not be
/// survived, such as `free` of a pointer Tally never returned.
#[cold]
pub fn fatal(args: fmt::Arguments<'_>) -> ! {
    print(args);
    // SAFETY: abort has no preconditions.
    unsafe { libc::abort() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_buffer_cuts_at_capacity() {
        let mut line = LineBuf::new();
        write!(line, "{}", "x".repeat(600)).unwrap();
        assert_eq!(line.as_bytes().len(), 512);
        let mut short = LineBuf::new();
        write!(short, "a{}b", 1).unwrap();
        assert_eq!(short.as_bytes(), b"a1b");
    }
}
