//! Diagnostics on stderr without allocating, and `errno` values in words ([`OsError`]).

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

/// An `errno` value in words, for messages: `Permission denied`, as glibc's
/// `strerrordesc_np` says it, from a table of static text (`strerror` may allocate and is not
/// async-signal-safe). Values the table lacks show as `error 123`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OsError(pub i32);

/// The `errno` values a dump, a mapping or a signal hook can meet, with glibc's words.
const OS_ERRORS: &[(i32, &str)] = &[
    (libc::EPERM, "Operation not permitted"),
    (libc::ENOENT, "No such file or directory"),
    (libc::EINTR, "Interrupted system call"),
    (libc::EIO, "Input/output error"),
    (libc::ENXIO, "No such device or address"),
    (libc::E2BIG, "Argument list too long"),
    (libc::EBADF, "Bad file descriptor"),
    (libc::EAGAIN, "Resource temporarily unavailable"),
    (libc::ENOMEM, "Cannot allocate memory"),
    (libc::EACCES, "Permission denied"),
    (libc::EFAULT, "Bad address"),
    (libc::EBUSY, "Device or resource busy"),
    (libc::EEXIST, "File exists"),
    (libc::EXDEV, "Invalid cross-device link"),
    (libc::ENODEV, "No such device"),
    (libc::ENOTDIR, "Not a directory"),
    (libc::EISDIR, "Is a directory"),
    (libc::EINVAL, "Invalid argument"),
    (libc::ENFILE, "Too many open files in system"),
    (libc::EMFILE, "Too many open files"),
    (libc::ETXTBSY, "Text file busy"),
    (libc::EFBIG, "File too large"),
    (libc::ENOSPC, "No space left on device"),
    (libc::ESPIPE, "Illegal seek"),
    (libc::EROFS, "Read-only file system"),
    (libc::EMLINK, "Too many links"),
    (libc::EPIPE, "Broken pipe"),
    (libc::ERANGE, "Numerical result out of range"),
    (libc::ENAMETOOLONG, "File name too long"),
    (libc::ENOSYS, "Function not implemented"),
    (libc::ELOOP, "Too many levels of symbolic links"),
    (libc::EOVERFLOW, "Value too large for defined data type"),
    (libc::EOPNOTSUPP, "Operation not supported"),
    (libc::ETIMEDOUT, "Connection timed out"),
    (libc::ESTALE, "Stale file handle"),
    (libc::EDQUOT, "Disk quota exceeded"),
];

impl fmt::Display for OsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match OS_ERRORS.iter().find(|&&(e, _)| e == self.0) {
            Some((_, text)) => f.write_str(text),
            None => write!(f, "error {}", self.0),
        }
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
    fn errors_in_words() {
        let text = |e| std::format!("{}", OsError(e));
        assert_eq!(text(libc::EACCES), "Permission denied");
        assert_eq!(text(libc::ENOENT), "No such file or directory");
        assert_eq!(text(libc::ENOSPC), "No space left on device");
        assert_eq!(text(4095), "error 4095");
        // The table's words are glibc's own.
        for &(e, words) in OS_ERRORS {
            // SAFETY: for a known errno glibc's strerror returns a pointer to its static,
            // NUL-terminated text (in the C locale the tests run in), never overwritten.
            let libc_words = unsafe { core::ffi::CStr::from_ptr(libc::strerror(e)) };
            assert_eq!(libc_words.to_str().unwrap(), words, "errno {e}");
        }
    }

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
