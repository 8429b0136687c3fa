//! The few file operations a profile dump needs. Paths are NUL-terminated byte strings (built
//! in stack buffers by the caller); errors are `Err(errno)`; `EINTR` is retried.

use core::ffi::c_int;

use crate::process::errno;

/// Opens a NUL-terminated path with `flags` (plus `O_CLOEXEC`) and `mode`.
pub fn open(path: &[u8], flags: c_int, mode: libc::mode_t) -> Result<c_int, i32> {
    if path.last() != Some(&0) {
        return Err(libc::EINVAL);
    }
    loop {
        // SAFETY: `path` is NUL-terminated.
        let fd = unsafe {
            libc::open(
                path.as_ptr().cast(),
                flags | libc::O_CLOEXEC,
                mode as libc::c_uint,
            )
        };
        if fd >= 0 {
            return Ok(fd);
        }
        let e = errno();
        if e != libc::EINTR {
            return Err(e);
        }
    }
}

/// Writes all of `bytes` to `fd`, retrying short writes.
pub fn write_all(fd: c_int, mut bytes: &[u8]) -> Result<(), i32> {
    while !bytes.is_empty() {
        // SAFETY: `bytes` is a valid readable buffer of its length.
        let n = unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
        if n < 0 {
            let e = errno();
            if e == libc::EINTR {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            return Err(libc::EIO);
        }
        bytes = &bytes[n as usize..];
    }
    Ok(())
}

/// Reads up to `buf.len()` bytes; `Ok(0)` at the end.
pub fn read(fd: c_int, buf: &mut [u8]) -> Result<usize, i32> {
    loop {
        // SAFETY: `buf` is a valid writable buffer of its length.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = errno();
        if e != libc::EINTR {
            return Err(e);
        }
    }
}

/// Closes `fd`, ignoring errors.
pub fn close(fd: c_int) {
    // SAFETY: closing a descriptor the caller owns.
    unsafe { libc::close(fd) };
}

/// `fsync`.
pub fn fsync(fd: c_int) -> Result<(), i32> {
    // SAFETY: fsync on a descriptor has no memory-safety preconditions.
    if unsafe { libc::fsync(fd) } == 0 {
        Ok(())
    } else {
        Err(errno())
    }
}

/// Renames NUL-terminated `from` to NUL-terminated `to`.
pub fn rename(from: &[u8], to: &[u8]) -> Result<(), i32> {
    if from.last() != Some(&0) || to.last() != Some(&0) {
        return Err(libc::EINVAL);
    }
    // SAFETY: both paths are NUL-terminated.
    if unsafe { libc::rename(from.as_ptr().cast(), to.as_ptr().cast()) } == 0 {
        Ok(())
    } else {
        Err(errno())
    }
}

/// Removes a NUL-terminated path, ignoring errors.
pub fn unlink(path: &[u8]) {
    if path.last() == Some(&0) {
        // SAFETY: the path is NUL-terminated.
        unsafe { libc::unlink(path.as_ptr().cast()) };
    }
}

/// A whole file mapped read-only and private (unmapped when dropped): for reading an object
/// file's symbol tables without copying it onto the heap.
///
/// Invariant: `data` is a mapping of `len` bytes (`len > 0`) made by [`MappedFile::open`] and
/// owned by this value alone, readable until the value is dropped.
pub struct MappedFile {
    data: *const u8,
    len: usize,
}

impl MappedFile {
    /// Maps the file at the NUL-terminated `path` (`None` if it cannot be opened, is empty or is
    /// not a regular file).
    pub fn open(path: &[u8]) -> Option<MappedFile> {
        let fd = open(path, libc::O_RDONLY, 0).ok()?;
        // SAFETY: an all-zero `stat` is a valid value for fstat to overwrite.
        let mut st: libc::stat = unsafe { core::mem::zeroed() };
        // SAFETY: `fd` is open; `st` is a valid out-pointer.
        let ok = unsafe { libc::fstat(fd, &mut st) } == 0;
        let len = st.st_size as usize;
        if !ok || st.st_mode & libc::S_IFMT != libc::S_IFREG || len == 0 {
            close(fd);
            return None;
        }
        // SAFETY: a new private read-only mapping of an open regular file; it does not touch
        // existing memory.
        let data = unsafe {
            libc::mmap(
                core::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_PRIVATE,
                fd,
                0,
            )
        };
        close(fd);
        (data != libc::MAP_FAILED).then_some(MappedFile {
            data: data.cast_const().cast(),
            len,
        })
    }

    /// The file's bytes.
    pub fn bytes(&self) -> &[u8] {
        // SAFETY: per the type's invariant the mapping is readable for `len` bytes while `self`
        // lives. (A file truncated meanwhile by another process would fault on its lost pages;
        // object files of a running process are not rewritten in place.)
        unsafe { core::slice::from_raw_parts(self.data, self.len) }
    }
}

impl Drop for MappedFile {
    fn drop(&mut self) {
        // SAFETY: per the type's invariant this value owns the mapping; nothing borrows it
        // after drop.
        unsafe { libc::munmap(self.data.cast_mut().cast(), self.len) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_rename_read_unlink() {
        let dir = std::env::temp_dir();
        let a = std::format!("{}/tally-pal-{}.a\0", dir.display(), std::process::id());
        let b = std::format!("{}/tally-pal-{}.b\0", dir.display(), std::process::id());
        let fd = open(
            a.as_bytes(),
            libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC,
            0o600,
        )
        .unwrap();
        write_all(fd, b"hello").unwrap();
        fsync(fd).unwrap();
        close(fd);
        rename(a.as_bytes(), b.as_bytes()).unwrap();
        let fd = open(b.as_bytes(), libc::O_RDONLY, 0).unwrap();
        let mut buf = [0u8; 16];
        assert_eq!(read(fd, &mut buf), Ok(5));
        assert_eq!(&buf[..5], b"hello");
        close(fd);
        unlink(b.as_bytes());
        assert_eq!(open(b.as_bytes(), libc::O_RDONLY, 0), Err(libc::ENOENT));
        assert_eq!(open(b"no-terminator", libc::O_RDONLY, 0), Err(libc::EINVAL));
    }
}
