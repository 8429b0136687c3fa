//! Dumps: the `heap_v2` text through `tally_format::Writer`, files written to a new temporary
//! file of a random name (`O_EXCL`, mode 0600) and renamed, named
//! `<prefix>.<pid>.<seq>.<kind>.heap`.
//!
//! Nothing here allocates: the writer formats into stack buffers, output goes through an 8 KiB
//! buffer on the stack to `write(2)`, and `/proc/self/maps` is copied through the same kind of
//! buffer. Paths are NUL-terminated byte strings built in fixed buffers of `PATH_MAX` bytes.

use core::ffi::c_int;

use tally_format::{Estimate, Sink, SinkError, WriteError, Writer};

use crate::stacks::StackTable;
use tally_pal::file;

/// Longest path a dump may have, NUL included (Linux `PATH_MAX`).
pub const PATH_MAX: usize = 4096;

/// Why a dump failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DumpError {
    /// The profiler is off (`prof:false`): there is nothing to write.
    Off,
    /// A system call failed with this `errno`.
    Os(i32),
    /// The path (with its suffixes) does not fit in [`PATH_MAX`] or holds a NUL.
    PathTooLong,
    /// The writer refused a call (a bug).
    Format,
}

impl core::fmt::Display for DumpError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            DumpError::Off => f.write_str("the heap profiler is off (prof:false)"),
            DumpError::Os(e) => write!(f, "{}", tally_pal::OsError(*e)),
            DumpError::PathTooLong => f.write_str("the file name is too long or holds a NUL byte"),
            DumpError::Format => f.write_str("the profile writer refused a call (a bug in Tally)"),
        }
    }
}

impl From<WriteError> for DumpError {
    fn from(e: WriteError) -> Self {
        match e {
            WriteError::Sink(SinkError(errno)) => DumpError::Os(errno),
            WriteError::OutOfOrder => DumpError::Format,
        }
    }
}

/// What triggered a dump; gives the `<kind>` part of the file name, as in jemalloc.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DumpKind {
    /// `i<n>`: every `2^lg_prof_interval` bytes.
    Interval(u64),
    /// `m<n>`: asked for from code or by signal.
    Manual(u64),
    /// `u<n>`: a new peak of mapped memory (`prof_gdump`).
    Peak(u64),
    /// `f`: at exit (`prof_final`).
    Final,
}

/// A sink that buffers on the stack and writes to a file descriptor.
pub struct FdSink {
    fd: c_int,
    buf: [u8; 8192],
    len: usize,
}

impl FdSink {
    /// A sink writing to `fd` (not closed by the sink).
    pub fn new(fd: c_int) -> Self {
        FdSink {
            fd,
            buf: [0; 8192],
            len: 0,
        }
    }
    /// Writes out what is buffered.
    pub fn flush(&mut self) -> Result<(), SinkError> {
        let r = file::write_all(self.fd, &self.buf[..self.len]).map_err(SinkError);
        self.len = 0;
        r
    }
}

impl Sink for FdSink {
    fn write_all(&mut self, bytes: &[u8]) -> Result<(), SinkError> {
        if self.len + bytes.len() > self.buf.len() {
            self.flush()?;
        }
        if bytes.len() > self.buf.len() {
            return file::write_all(self.fd, bytes).map_err(SinkError);
        }
        self.buf[self.len..self.len + bytes.len()].copy_from_slice(bytes);
        self.len += bytes.len();
        Ok(())
    }
}

/// A byte-string builder over a fixed buffer.
struct PathBuf<'a> {
    buf: &'a mut [u8; PATH_MAX],
    len: usize,
}

impl PathBuf<'_> {
    fn push(&mut self, bytes: &[u8]) -> Result<(), DumpError> {
        if bytes.contains(&0) || self.len + bytes.len() >= PATH_MAX {
            return Err(DumpError::PathTooLong);
        }
        self.buf[self.len..self.len + bytes.len()].copy_from_slice(bytes);
        self.len += bytes.len();
        Ok(())
    }
    fn push_decimal(&mut self, v: u64) -> Result<(), DumpError> {
        let mut digits = [0u8; 20];
        self.push(tally_format::write::decimal(v, &mut digits))
    }
}

/// Builds `<prefix>.<pid>.<seq>.<kind>.heap` NUL-terminated in `buf`; returns its length
/// without the NUL.
pub fn dump_file_name(
    buf: &mut [u8; PATH_MAX],
    prefix: &[u8],
    pid: u32,
    seq: u64,
    kind: DumpKind,
) -> Result<usize, DumpError> {
    let mut p = PathBuf { buf, len: 0 };
    p.push(prefix)?;
    p.push(b".")?;
    p.push_decimal(u64::from(pid))?;
    p.push(b".")?;
    p.push_decimal(seq)?;
    match kind {
        DumpKind::Interval(n) => {
            p.push(b".i")?;
            p.push_decimal(n)?;
        }
        DumpKind::Manual(n) => {
            p.push(b".m")?;
            p.push_decimal(n)?;
        }
        DumpKind::Peak(n) => {
            p.push(b".u")?;
            p.push_decimal(n)?;
        }
        DumpKind::Final => p.push(b".f")?,
    }
    p.push(b".heap")?;
    let len = p.len;
    p.buf[len] = 0;
    Ok(len)
}

/// Writes a whole dump of `stacks` at mean sampling period `period` into `sink`: header,
/// totals, every stack with something live (or, with `accum`, ever allocated), then the memory
/// map read from `/proc/self/maps` if `with_maps`. Returns the sink.
pub fn write_dump<S: Sink>(
    stacks: &StackTable,
    period: u64,
    accum: bool,
    sink: S,
    with_maps: bool,
) -> Result<S, DumpError> {
    let mut w = Writer::new(sink, period)?;
    let (mut live_total, mut accum_total) = (Estimate::ZERO, Estimate::ZERO);
    for s in stacks.iter() {
        live_total.add(s.live);
        accum_total.add(s.accum);
    }
    w.totals(live_total.to_written(period), accum_total.to_written(period))?;
    for s in stacks.iter() {
        let live = s.live.to_written(period);
        let acc = s.accum.to_written(period);
        if live.objects == 0 && !(accum && acc.objects != 0) {
            continue;
        }
        w.stack(s.frames, live, acc)?;
    }
    if with_maps {
        let fd = file::open(b"/proc/self/maps\0", libc::O_RDONLY, 0).map_err(DumpError::Os)?;
        let mut chunk = [0u8; 4096];
        let r = loop {
            match file::read(fd, &mut chunk) {
                Ok(0) => break Ok(()),
                Ok(n) => {
                    if let Err(e) = w.maps(&chunk[..n]) {
                        break Err(DumpError::from(e));
                    }
                }
                Err(e) => break Err(DumpError::Os(e)),
            }
        };
        file::close(fd);
        r?;
        // An empty map still gets its section.
        w.maps(b"")?;
    }
    Ok(w.finish()?)
}

/// Tries at most this many random temporary names before giving up with `EEXIST`: a name is
/// taken only if someone else made it, and 16 collisions of 64 random bits do not happen by
/// chance.
const TEMP_NAME_TRIES: usize = 16;

/// Writes a file at `path` (bytes, no NUL needed) with `write`, which gets an open descriptor:
/// first to a new file `<path>.<16 random hex digits>.tmp`, then renamed over `path`, so a
/// reader never sees a partial file. On failure the temporary file is removed.
///
/// The temporary file is safe in any directory, a shared sticky one such as `/tmp` included: it
/// is created with `O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC` and mode 0600, so it is a new
/// file, owned by the writer and private to it, never a file or symlink someone planted; its
/// name comes from `getrandom`, so nobody can plant one in its way beforehand either (a name
/// that exists anyway is skipped for another, `TEMP_NAME_TRIES` times). `rename` replaces a
/// symlink at `path` itself, never its target.
pub fn write_file(path: &[u8], write: impl FnOnce(c_int) -> Result<(), DumpError>) -> Result<(), DumpError> {
    let mut final_buf = [0u8; PATH_MAX];
    let mut tmp_buf = [0u8; PATH_MAX];
    let mut f = PathBuf {
        buf: &mut final_buf,
        len: 0,
    };
    f.push(path)?;
    let flen = f.len;
    final_buf[flen] = 0;
    let mut opened = Err(DumpError::Os(libc::EEXIST));
    let mut tlen = 0;
    for _ in 0..TEMP_NAME_TRIES {
        let mut t = PathBuf {
            buf: &mut tmp_buf,
            len: 0,
        };
        t.push(path)?;
        t.push(b".")?;
        t.push(&hex16(tally_pal::process::random_u64()))?;
        t.push(b".tmp")?;
        tlen = t.len;
        tmp_buf[tlen] = 0;
        opened = file::open(
            &tmp_buf[..=tlen],
            libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            0o600,
        )
        .map_err(DumpError::Os);
        if opened != Err(DumpError::Os(libc::EEXIST)) {
            break;
        }
    }
    let fd = opened?;
    let tmp = &tmp_buf[..=tlen];
    let r = write(fd).and_then(|()| file::fsync(fd).map_err(DumpError::Os));
    file::close(fd);
    let r = r.and_then(|()| file::rename(tmp, &final_buf[..=flen]).map_err(DumpError::Os));
    if r.is_err() {
        file::unlink(tmp);
    }
    r
}

/// `v` as 16 lower-case hex digits.
fn hex16(v: u64) -> [u8; 16] {
    let mut out = [0u8; 16];
    for (i, digit) in out.iter_mut().enumerate() {
        *digit = b"0123456789abcdef"[(v >> (60 - 4 * i)) as usize & 0xf];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names() {
        let mut buf = [0u8; PATH_MAX];
        let n = dump_file_name(&mut buf, b"/tmp/tally", 1234, 3, DumpKind::Interval(2)).unwrap();
        assert_eq!(&buf[..=n], b"/tmp/tally.1234.3.i2.heap\0");
        let n = dump_file_name(&mut buf, b"x", 1, 0, DumpKind::Final).unwrap();
        assert_eq!(&buf[..n], b"x.1.0.f.heap");
        let n = dump_file_name(&mut buf, b"x", 1, 9, DumpKind::Manual(4)).unwrap();
        assert_eq!(&buf[..n], b"x.1.9.m4.heap");
        let n = dump_file_name(&mut buf, b"x", 1, 9, DumpKind::Peak(0)).unwrap();
        assert_eq!(&buf[..n], b"x.1.9.u0.heap");
        let long = [b'a'; PATH_MAX];
        assert_eq!(
            dump_file_name(&mut buf, &long, 1, 0, DumpKind::Final),
            Err(DumpError::PathTooLong)
        );
        assert_eq!(
            dump_file_name(&mut buf, b"a\0b", 1, 0, DumpKind::Final),
            Err(DumpError::PathTooLong)
        );
    }

    #[test]
    fn errors_in_words() {
        let text = |e: DumpError| std::format!("{e}");
        assert_eq!(text(DumpError::Os(libc::EACCES)), "Permission denied");
        assert_eq!(text(DumpError::Os(libc::ENOENT)), "No such file or directory");
        assert!(text(DumpError::Off).contains("off"));
        assert!(text(DumpError::PathTooLong).contains("too long"));
    }

    #[test]
    fn temporary_names_are_random_hex() {
        assert_eq!(&hex16(0x0123_4567_89ab_cdef), b"0123456789abcdef");
        assert_eq!(&hex16(0), b"0000000000000000");
    }
}
