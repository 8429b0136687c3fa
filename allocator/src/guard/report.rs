//! The report of an error guarded sampling caught, and the fault handler that writes it.
//!
//! The report goes to stderr (and to `<guard_report>.<pid>.guard` when that option is set),
//! every line starting `tally: guard: `, written with system calls from stack buffers: no
//! allocation, no lock, so it can be written from a signal handler that interrupted anything,
//! `malloc` included. Its form (`docs/guard.md`; `tally symbolize` reads it):
//!
//! ```text
//! tally: guard: use-after-free: write at 0x7f0c1a2b3f08, 8 bytes into the 64-byte block at 0x7f0c1a2b3f00
//! tally: guard: access at:
//! tally: guard:   #0 0x000055f1d2a01230 (/tmp/x/uaf+0x1230)
//! tally: guard: allocated by thread 4242:
//! tally: guard:   #0 0x000055f1d2a011a9 in make_block+0x20 (/tmp/x/uaf+0x11a9)
//! tally: guard: freed by thread 4242:
//! tally: guard:   #0 0x000055f1d2a011c3 (/tmp/x/uaf+0x11c3)
//! tally: guard: the process ends with SIGSEGV; `tally symbolize` names the frames with files and lines
//! ```
//!
//! The fault handler recognizes a kernel fault inside the guarded region and writes the report
//! once (a second thread faulting meanwhile waits for it); then the fault goes where any other
//! fault goes ([`pal::process::pass_fault_on`]): to the handler installed before Tally's (a
//! crash reporter sees it too), or to the default action, put back before the handler returns,
//! so the faulting instruction runs again and the process dies of the signal. A fault in the
//! region after the report (the previous handler returned) gets the default action.

use core::ffi::c_void;
use core::fmt::{self, Write};
use core::sync::atomic::{AtomicU8, AtomicUsize, Ordering};

use tally_pal::{self as pal, LineBuf};

use super::{contains, nearest_slot, slot, symbols, Stack, EMPTY, FREED, LIVE};

/// What went wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// An access to a freed block.
    UseAfterFree,
    /// An access past a live block's end.
    BufferOverflow,
    /// An access before a live block's start.
    BufferUnderflow,
    /// A free of a block freed before.
    DoubleFree,
    /// A free of a pointer that is not a live block's start.
    InvalidFree,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::UseAfterFree => "use-after-free",
            Kind::BufferOverflow => "buffer-overflow",
            Kind::BufferUnderflow => "buffer-underflow",
            Kind::DoubleFree => "double-free",
            Kind::InvalidFree => "invalid-free",
        }
    }
}

/// `guard_report`'s path prefix, set once at initialization (before the handler is installed).
struct Prefix {
    bytes: core::cell::UnsafeCell<[u8; 256]>,
    len: AtomicUsize,
}
// SAFETY: written once by `configure` before `len` is published (Release) and before the fault
// handler exists; read after an Acquire load of `len`.
unsafe impl Sync for Prefix {}
static PREFIX: Prefix = Prefix {
    bytes: core::cell::UnsafeCell::new([0; 256]),
    len: AtomicUsize::new(0),
};

/// 0: no report yet; 1: one is being written; 2: written.
static STATE: AtomicU8 = AtomicU8::new(0);

/// Keeps `guard_report`'s prefix (at initialization).
pub fn configure(prefix: &[u8]) {
    if prefix.is_empty() || prefix.len() > 200 || PREFIX.len.load(Ordering::Relaxed) != 0 {
        return;
    }
    // SAFETY: see Prefix: the one write, before publication.
    unsafe { (&mut *PREFIX.bytes.get())[..prefix.len()].copy_from_slice(prefix) };
    PREFIX.len.store(prefix.len(), Ordering::Release);
}

/// Where the report goes: stderr, and the report file if there is one.
struct Out {
    file: i32,
}

impl Out {
    fn open() -> Out {
        let len = PREFIX.len.load(Ordering::Acquire);
        if len == 0 {
            return Out { file: -1 };
        }
        let mut path = LineBuf::new();
        // SAFETY: published (see Prefix).
        let prefix = unsafe { &(&*PREFIX.bytes.get())[..len] };
        let _ = write!(
            path,
            "{}.{}.guard\0",
            core::str::from_utf8(prefix).unwrap_or("tally"),
            pal::pid()
        );
        let file = pal::file::open(
            path.as_bytes(),
            libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC,
            0o600,
        )
        .unwrap_or(-1);
        Out { file }
    }

    fn line(&mut self, args: fmt::Arguments<'_>) {
        let mut line = LineBuf::new();
        let _ = line.write_str("tally: guard: ");
        let _ = line.write_fmt(args);
        let _ = line.write_str("\n");
        self.raw(line.as_bytes());
    }

    fn raw(&mut self, bytes: &[u8]) {
        pal::write_stderr(bytes);
        if self.file >= 0 {
            let _ = pal::file::write_all(self.file, bytes);
        }
    }

    fn stack(&mut self, title: fmt::Arguments<'_>, frames: &[usize]) {
        self.line(title);
        if frames.is_empty() {
            self.line(format_args!("  (no frames)"));
        }
        for (k, &pc) in frames.iter().enumerate() {
            let mut line = LineBuf::new();
            let _ = write!(line, "tally: guard:   #{k} ");
            symbols::write_frame(&mut line, pc);
            // A frame line cut at the buffer's end still ends its line.
            let mut bytes = [0u8; 513];
            let n = line.as_bytes().len();
            bytes[..n].copy_from_slice(line.as_bytes());
            bytes[n] = b'\n';
            self.raw(&bytes[..=n]);
        }
    }

    fn close(self) {
        if self.file >= 0 {
            pal::file::close(self.file);
        }
    }
}

/// The stacks of slot `i`: allocated by, and (if freed) freed by.
fn slot_stacks(out: &mut Out, i: usize) {
    let s = slot(i);
    let state = s.state.load(Ordering::Acquire);
    // SAFETY: a plain read for a report (see the guard module's invariants).
    let d = unsafe { &*s.data.get() };
    out.stack(
        format_args!("allocated by thread {}:", d.alloc.tid),
        d.alloc.frames(),
    );
    if state == FREED {
        out.stack(format_args!("freed by thread {}:", d.free.tid), d.free.frames());
    }
}

/// Describes where `addr` lies relative to the block of slot `i`: `N bytes into`, `N bytes
/// past the end of`, `N bytes before the start of`, and the kind of access that means.
fn place(addr: usize, i: usize) -> (Kind, usize, &'static str, usize, usize) {
    let s = slot(i);
    let freed = s.state.load(Ordering::Acquire) == FREED;
    // SAFETY: a plain read for a report.
    let (block, size) = unsafe { ((*s.data.get()).block, (*s.data.get()).size) };
    let (kind, n, how) = if addr < block {
        (Kind::BufferUnderflow, block - addr, "bytes before the start of")
    } else if addr >= block + size {
        (
            Kind::BufferOverflow,
            addr - (block + size),
            "bytes past the end of",
        )
    } else {
        (Kind::UseAfterFree, addr - block, "bytes into")
    };
    (if freed { Kind::UseAfterFree } else { kind }, n, how, size, block)
}

/// The fault handler (`SIGSEGV`, `SIGBUS`; see the module docs).
pub extern "C" fn on_fault(sig: i32, info: *mut libc::siginfo_t, ctx: *mut c_void) {
    let errno = pal::errno();
    // SAFETY: the kernel passes a valid siginfo_t and context to a SA_SIGINFO handler.
    let (kernel, addr) = unsafe {
        (
            pal::process::is_kernel_fault(info),
            pal::process::fault_address(info),
        )
    };
    if kernel && contains(addr) {
        if STATE
            .compare_exchange(0, 1, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            // SAFETY: as above.
            let (write, pc) = unsafe { (pal::process::fault_is_write(ctx), pal::process::fault_pc(ctx)) };
            report_fault(sig, addr, write, pc);
            STATE.store(2, Ordering::Release);
            // Then whatever handled the signal before Tally (a crash reporter) has its turn, or
            // the default action. Should that handler return, the access runs again, faults
            // again, and finds the report written: the default action then.
            // SAFETY: the arguments our handler received.
            unsafe { pal::process::pass_fault_on(sig, info, ctx) };
            pal::set_errno(errno);
            return;
        } else {
            // Another thread is writing a report: let it finish (at most about 2 s) before this
            // fault ends the process.
            for _ in 0..2000 {
                if STATE.load(Ordering::Acquire) == 2 {
                    break;
                }
                pal::sleep_ms(1);
            }
        }
        pal::process::die_of(sig, false);
        pal::set_errno(errno);
        return;
    }
    // SAFETY: the arguments our handler received.
    unsafe { pal::process::pass_fault_on(sig, info, ctx) };
    pal::set_errno(errno);
}

fn report_fault(sig: i32, addr: usize, write: Option<bool>, pc: usize) {
    let mut out = Out::open();
    let access = match write {
        Some(true) => "write",
        Some(false) => "read",
        None => "access",
    };
    match nearest_slot(addr) {
        Some(i) => {
            let (kind, n, how, size, block) = place(addr, i);
            out.line(format_args!(
                "{}: {access} at {addr:#x}, {n} {how} the {size}-byte block at {block:#x}",
                kind.name()
            ));
            if pc != 0 {
                out.stack(format_args!("access at:"), &[pc]);
            }
            slot_stacks(&mut out, i);
        }
        None => {
            out.line(format_args!(
                "buffer-overflow: {access} at {addr:#x}, in a guard page with no block near it"
            ));
            if pc != 0 {
                out.stack(format_args!("access at:"), &[pc]);
            }
        }
    }
    if pal::process::has_previous_handler(sig) {
        out.line(format_args!(
            "{} goes on to the handler installed before Tally's; `tally symbolize` names the frames with files and lines",
            pal::process::SignalName(sig)
        ));
    } else {
        out.line(format_args!(
            "the process ends with {}; `tally symbolize` names the frames with files and lines",
            pal::process::SignalName(sig)
        ));
    }
    out.close();
}

/// Reports a double or invalid free of `addr` (in the guarded region) handed to `who`, with
/// the stacks of slot `near` (the block it is, or the nearest), and aborts.
#[cold]
#[inline(never)]
pub fn bad_free(kind: Kind, addr: usize, near: Option<usize>, who: &str) -> ! {
    let here = Stack::here();
    if STATE
        .compare_exchange(0, 1, Ordering::AcqRel, Ordering::Acquire)
        .is_ok()
    {
        let mut out = Out::open();
        match near {
            Some(i) if slot(i).state.load(Ordering::Acquire) != EMPTY => {
                let (_, n, how, size, block) = place(addr, i);
                let state = slot(i).state.load(Ordering::Acquire);
                let what = match state {
                    FREED => "freed before",
                    LIVE => "live",
                    _ => "being allocated or freed",
                };
                if kind == Kind::DoubleFree {
                    out.line(format_args!(
                        "double-free: {who}({addr:#x}): the {size}-byte block at {block:#x} was freed before"
                    ));
                } else {
                    out.line(format_args!(
                        "invalid-free: {who}({addr:#x}): {n} {how} the {size}-byte block at {block:#x} ({what})"
                    ));
                }
                slot_stacks(&mut out, i);
            }
            _ => out.line(format_args!(
                "{}: {who}({addr:#x}): not a block's start (a guard page or an unused slot)",
                kind.name()
            )),
        }
        out.stack(
            format_args!("{who}() called by thread {}:", here.tid),
            here.frames(),
        );
        out.line(format_args!(
            "the process ends with SIGABRT; `tally symbolize` names the frames with files and lines"
        ));
        out.close();
        STATE.store(2, Ordering::Release);
    }
    // SAFETY: abort has no preconditions.
    unsafe { libc::abort() }
}
