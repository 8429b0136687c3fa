//! The `heap_v2` writer: no allocation, no `core::fmt`, every byte goes to a caller's [`Sink`].
//!
//! A dump is written in this order, which [`Writer`] enforces (a call out of order returns
//! [`WriteError::OutOfOrder`] and writes nothing):
//!
//! ```text
//! Writer::new(sink, period)        heap_v2/<period>
//! .totals(live, accum)               t*: <n>: <s> [<n>: <s>]
//! .thread(id, live, accum, name)*    t<id>: <n>: <s> [<n>: <s>][ <name>]
//! ( .stack(frames, live, accum)    @ 0x<frame> 0x<frame> ...
//!                                    t*: <n>: <s> [<n>: <s>]
//!   .stack_thread(id, live, accum)*  t<id>: <n>: <s> [<n>: <s>]
//! )*
//! .maps(text)*                     (blank line) MAPPED_LIBRARIES: then the text, verbatim
//! .finish()                        gives the sink back
//! ```
//!
//! The pairs are written as given: they are [`Counts`], already back-solved (see
//! [`crate::estimate`]); [`Writer::stack_estimate`] does the back-solving for the caller.

use crate::estimate::{Counts, Estimate};

/// Where a dump's bytes go. Implemented for closures `FnMut(&[u8]) -> Result<(), SinkError>`.
pub trait Sink {
    /// Writes all of `bytes` or fails.
    fn write_all(&mut self, bytes: &[u8]) -> Result<(), SinkError>;
}

/// A sink's failure: an `errno`-like code, 0 when there is none to give.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SinkError(pub i32);

impl<F: FnMut(&[u8]) -> Result<(), SinkError>> Sink for F {
    fn write_all(&mut self, bytes: &[u8]) -> Result<(), SinkError> {
        self(bytes)
    }
}

/// A fixed byte buffer as a sink, for tests and for callers that format into memory they own.
/// Fails with `SinkError(0)` once full (what fitted is kept).
pub struct SliceSink<'a> {
    buf: &'a mut [u8],
    len: usize,
}

impl<'a> SliceSink<'a> {
    /// An empty sink writing into `buf`.
    pub fn new(buf: &'a mut [u8]) -> Self {
        SliceSink { buf, len: 0 }
    }
    /// The bytes written so far.
    pub fn written(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl Sink for SliceSink<'_> {
    fn write_all(&mut self, bytes: &[u8]) -> Result<(), SinkError> {
        let room = self.buf.len() - self.len;
        let n = bytes.len().min(room);
        self.buf[self.len..self.len + n].copy_from_slice(&bytes[..n]);
        self.len += n;
        if n == bytes.len() {
            Ok(())
        } else {
            Err(SinkError(0))
        }
    }
}

/// Why a write failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteError {
    /// The sink failed; the dump is incomplete.
    Sink(SinkError),
    /// A call came in the wrong order (see the module docs); nothing was written by it.
    OutOfOrder,
}

impl From<SinkError> for WriteError {
    fn from(e: SinkError) -> Self {
        WriteError::Sink(e)
    }
}

/// Where the writer is in the layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Section {
    /// Header written, totals not yet.
    Header,
    /// Totals and maybe per-thread lines written.
    Threads,
    /// Inside a stack block (its `@` and `t*:` lines written).
    Stacks,
    /// `MAPPED_LIBRARIES:` written.
    Maps,
}

/// Writes one `heap_v2` dump into a [`Sink`]. See the module docs for the call order.
pub struct Writer<S: Sink> {
    sink: S,
    period: u64,
    section: Section,
}

/// Longest formatted line part: "  t" + 20 digits + ": " + 4×20 digits + separators, < 128.
const LINE_BUF: usize = 128;

/// Formats `v` in decimal into `digits` (no allocation, no `core::fmt`) and returns the digits.
pub fn decimal(mut v: u64, digits: &mut [u8; 20]) -> &[u8] {
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    &digits[i..]
}

/// A small stack buffer that numbers are formatted into before one `write_all`.
struct Line {
    buf: [u8; LINE_BUF],
    len: usize,
}

impl Line {
    fn new() -> Self {
        Line {
            buf: [0; LINE_BUF],
            len: 0,
        }
    }
    fn bytes(&mut self, b: &[u8]) {
        self.buf[self.len..self.len + b.len()].copy_from_slice(b);
        self.len += b.len();
    }
    fn decimal(&mut self, v: u64) {
        let mut digits = [0u8; 20];
        self.bytes(decimal(v, &mut digits));
    }
    fn hex(&mut self, mut v: u64) {
        let mut digits = [0u8; 16];
        let mut i = digits.len();
        loop {
            i -= 1;
            digits[i] = b"0123456789abcdef"[(v & 15) as usize];
            v >>= 4;
            if v == 0 {
                break;
            }
        }
        self.bytes(b"0x");
        self.bytes(&digits[i..]);
    }
    /// `<n>: <s> [<n>: <s>]`
    fn pairs(&mut self, live: Counts, accum: Counts) {
        self.decimal(live.objects);
        self.bytes(b": ");
        self.decimal(live.bytes);
        self.bytes(b" [");
        self.decimal(accum.objects);
        self.bytes(b": ");
        self.decimal(accum.bytes);
        self.bytes(b"]");
    }
    fn as_slice(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl<S: Sink> Writer<S> {
    /// Starts a dump: writes `heap_v2/<period>`. `period` is the mean sampling period in bytes
    /// (`2^lg_prof_sample`); it is also the `T` that [`Writer::stack_estimate`] back-solves with.
    pub fn new(mut sink: S, period: u64) -> Result<Self, WriteError> {
        let mut line = Line::new();
        line.bytes(b"heap_v2/");
        line.decimal(period);
        line.bytes(b"\n");
        sink.write_all(line.as_slice())?;
        Ok(Writer {
            sink,
            period,
            section: Section::Header,
        })
    }

    /// The mean sampling period this dump declares.
    pub fn period(&self) -> u64 {
        self.period
    }

    /// The totals over all stacks: `  t*: …`. Exactly once, right after [`Writer::new`].
    /// jeprof ignores this line; write the back-solved sums (as jemalloc does) so that a reader
    /// that unbiases it gets the right order of magnitude.
    pub fn totals(&mut self, live: Counts, accum: Counts) -> Result<(), WriteError> {
        self.expect(self.section == Section::Header)?;
        let mut line = Line::new();
        line.bytes(b"  t*: ");
        line.pairs(live, accum);
        line.bytes(b"\n");
        self.sink.write_all(line.as_slice())?;
        self.section = Section::Threads;
        Ok(())
    }

    /// One per-thread summary line after the totals: `  t<id>: … [name]`. The name must hold
    /// no newline (a newline is written as a space).
    pub fn thread(
        &mut self,
        id: u64,
        live: Counts,
        accum: Counts,
        name: Option<&[u8]>,
    ) -> Result<(), WriteError> {
        self.expect(self.section == Section::Threads)?;
        let mut line = Line::new();
        line.bytes(b"  t");
        line.decimal(id);
        line.bytes(b": ");
        line.pairs(live, accum);
        self.sink.write_all(line.as_slice())?;
        if let Some(name) = name {
            self.sink.write_all(b" ")?;
            self.write_one_line(name)?;
        }
        self.sink.write_all(b"\n")?;
        Ok(())
    }

    /// One stack: `@ 0x… 0x…` (innermost frame first, as captured: return addresses, which the
    /// readers decrement themselves) and its `  t*:` line. A stack needs at least one frame; an
    /// empty one is written as the single frame `0x0` so that the file stays readable.
    pub fn stack(&mut self, frames: &[usize], live: Counts, accum: Counts) -> Result<(), WriteError> {
        self.expect(matches!(self.section, Section::Threads | Section::Stacks))?;
        self.sink.write_all(b"@")?;
        if frames.is_empty() {
            self.sink.write_all(b" 0x0")?;
        }
        for &frame in frames {
            let mut part = Line::new();
            part.bytes(b" ");
            part.hex(frame as u64);
            self.sink.write_all(part.as_slice())?;
        }
        let mut line = Line::new();
        line.bytes(b"\n  t*: ");
        line.pairs(live, accum);
        line.bytes(b"\n");
        self.sink.write_all(line.as_slice())?;
        self.section = Section::Stacks;
        Ok(())
    }

    /// [`Writer::stack`] from unbiased estimates, back-solved with this dump's period.
    pub fn stack_estimate(
        &mut self,
        frames: &[usize],
        live: Estimate,
        accum: Estimate,
    ) -> Result<(), WriteError> {
        let period = self.period;
        self.stack(frames, live.to_written(period), accum.to_written(period))
    }

    /// A per-thread line of the stack written last: `  t<id>: …`.
    pub fn stack_thread(&mut self, id: u64, live: Counts, accum: Counts) -> Result<(), WriteError> {
        self.expect(self.section == Section::Stacks)?;
        let mut line = Line::new();
        line.bytes(b"  t");
        line.decimal(id);
        line.bytes(b": ");
        line.pairs(live, accum);
        line.bytes(b"\n");
        self.sink.write_all(line.as_slice())?;
        Ok(())
    }

    /// Memory map text, verbatim (the contents of `/proc/<pid>/maps`). The first call writes the
    /// blank line and `MAPPED_LIBRARIES:`; later calls append (so the map can be copied in
    /// chunks through a small buffer). Call it at least once with `b""` to write an empty section.
    pub fn maps(&mut self, text: &[u8]) -> Result<(), WriteError> {
        if self.section != Section::Maps {
            self.expect(self.section != Section::Header)?;
            self.sink.write_all(b"\nMAPPED_LIBRARIES:\n")?;
            self.section = Section::Maps;
        }
        self.sink.write_all(text)?;
        Ok(())
    }

    /// Ends the dump and gives the sink back. A dump that never reached [`Writer::totals`] is
    /// out of order (it would have no totals line).
    pub fn finish(self) -> Result<S, WriteError> {
        if self.section == Section::Header {
            return Err(WriteError::OutOfOrder);
        }
        Ok(self.sink)
    }

    fn expect(&self, in_order: bool) -> Result<(), WriteError> {
        if in_order {
            Ok(())
        } else {
            Err(WriteError::OutOfOrder)
        }
    }

    /// Writes `text` with `\n` and `\r` replaced by spaces, in chunks through a stack buffer.
    fn write_one_line(&mut self, text: &[u8]) -> Result<(), WriteError> {
        for chunk in text.chunks(LINE_BUF) {
            let mut line = Line::new();
            for &b in chunk {
                line.bytes(&[if b == b'\n' || b == b'\r' { b' ' } else { b }]);
            }
            self.sink.write_all(line.as_slice())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_the_layout_byte_for_byte() {
        let mut buf = [0u8; 512];
        let mut w = Writer::new(SliceSink::new(&mut buf), 524288).unwrap();
        w.totals(
            Counts {
                objects: 3,
                bytes: 96,
            },
            Counts::ZERO,
        )
        .unwrap();
        w.thread(
            0,
            Counts {
                objects: 3,
                bytes: 96,
            },
            Counts::ZERO,
            Some(b"main\nx"),
        )
        .unwrap();
        w.stack(
            &[0x401000, 0x7fff_0000_1234, 0],
            Counts {
                objects: 3,
                bytes: 96,
            },
            Counts {
                objects: 9,
                bytes: 288,
            },
        )
        .unwrap();
        w.stack_thread(
            0,
            Counts {
                objects: 3,
                bytes: 96,
            },
            Counts::ZERO,
        )
        .unwrap();
        w.maps(b"00400000-00401000 r-xp 00000000 00:00 0 /bin/x\n")
            .unwrap();
        let sink = w.finish().unwrap();
        let expected: &[u8] = b"heap_v2/524288\n  t*: 3: 96 [0: 0]\n  t0: 3: 96 [0: 0] main x\n\
@ 0x401000 0x7fff00001234 0x0\n  t*: 3: 96 [9: 288]\n  t0: 3: 96 [0: 0]\n\
\nMAPPED_LIBRARIES:\n00400000-00401000 r-xp 00000000 00:00 0 /bin/x\n";
        assert_eq!(sink.written(), expected);
    }

    #[test]
    fn extreme_numbers_fit_the_line_buffer() {
        let mut buf = [0u8; 512];
        let mut w = Writer::new(SliceSink::new(&mut buf), u64::MAX).unwrap();
        let max = Counts {
            objects: u64::MAX,
            bytes: u64::MAX,
        };
        w.totals(max, max).unwrap();
        w.thread(u64::MAX, max, max, None).unwrap();
        w.stack(&[usize::MAX], max, max).unwrap();
        w.stack_thread(u64::MAX, max, max).unwrap();
        assert!(w.finish().is_ok());
    }

    #[test]
    fn out_of_order_calls_are_refused() {
        let mut buf = [0u8; 256];
        let mut w = Writer::new(SliceSink::new(&mut buf), 1).unwrap();
        assert_eq!(
            w.stack(&[1], Counts::ZERO, Counts::ZERO),
            Err(WriteError::OutOfOrder)
        );
        assert_eq!(w.maps(b""), Err(WriteError::OutOfOrder));
        w.totals(Counts::ZERO, Counts::ZERO).unwrap();
        assert_eq!(w.totals(Counts::ZERO, Counts::ZERO), Err(WriteError::OutOfOrder));
        assert_eq!(
            w.stack_thread(1, Counts::ZERO, Counts::ZERO),
            Err(WriteError::OutOfOrder)
        );
        w.maps(b"").unwrap();
        assert_eq!(
            w.stack(&[1], Counts::ZERO, Counts::ZERO),
            Err(WriteError::OutOfOrder)
        );
    }

    #[test]
    fn a_full_sink_fails_cleanly() {
        let mut buf = [0u8; 10];
        let w = Writer::new(SliceSink::new(&mut buf), 524288);
        assert!(matches!(w, Err(WriteError::Sink(_))));
    }
}
