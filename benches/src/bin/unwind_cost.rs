//! The profiler's stack walkers against each other and against framehop: cost per frame, the
//! frames each finds on the same stacks, and what each allocates (docs/unwinding.md).
//!
//! Stacks (each walker captures from the same place, innermost first, as return addresses):
//! - `rust`: a 20-deep Rust recursion under `main` (every frame has unwind tables).
//! - `c`: inside a comparison callback of glibc's `qsort` (C frames between Rust ones).
//! - `jit`: 10 Rust frames, then 8 hand-made functions in anonymous executable memory that keep
//!   frame pointers and have no unwind tables (what a JVM's compiled code is to an unwinder),
//!   then 10 more Rust frames under `main`.
//! - `signal`: inside a signal handler, 10 Rust frames deep (the kernel's signal frame).
//!
//! Walkers: `fp` (`FramePointers`), `libgcc` (`Libgcc`), `cfi` (the profiler's default,
//! `cfi::Cfi`, as the profiler crate compiles it), `cfi-this` (the same source compiled into this
//! binary), `cfi-base` (an earlier commit's `cfi.rs` compiled into this binary the same way, when
//! `TALLY_UNWIND_BASE` names a copy of it; see `build.rs`), `framehop` (framehop 0.16 with `MustNotAllocateDuringUnwind`, every loaded object
//! registered from `dl_iterate_phdr`, reading the stack within this thread's bounds).
//!
//! `unwind_cost [--label L] [--rounds N] [--iterations N]` prints one `time` line per stack,
//! walker and round (`time <label> <stack> <walker> <round> <ns per capture> <frames>`), `frames`
//! lines (who finds what), `alloc` lines (allocations counted by this binary's global allocator)
//! and the medians. `unwind_cost --summarize FILE...` prints the medians over the `time` lines of
//! several runs (`benches/run-unwind-cost.sh`). `unwind_cost --count STACK WALKER N` only
//! captures, N times, for counting instructions under callgrind.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::ffi::{c_int, c_void, CStr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use framehop::x86_64::{CacheX86_64, UnwindRegsX86_64, UnwinderX86_64};
use framehop::{ExplicitModuleSectionInfo, MustNotAllocateDuringUnwind, Unwinder as _};
use tally_benches::harness::median;
use tally_profiler::cfi::{self, Cfi};
use tally_profiler::unwind::{FramePointers, Libgcc, Unwinder};
use tally_profiler::MAX_FRAMES;

/// What a `cfi.rs` takes from its crate.
mod unwind {
    pub use tally_profiler::unwind::{Frames, Libgcc, StackKey, Unwinder, MAX_FRAMES, MAX_FRAME_BYTES};
}

/// The profiler's walker, compiled here like `cfi_base` (see `build.rs`).
#[allow(dead_code, missing_docs, clippy::all)]
mod cfi_this {
    include!(concat!(env!("OUT_DIR"), "/cfi_this.rs"));
}

/// An earlier commit's walker (`TALLY_UNWIND_BASE`), as it was.
#[cfg(unwind_base)]
#[allow(dead_code, missing_docs, clippy::all)]
mod cfi_base {
    include!(concat!(env!("OUT_DIR"), "/cfi_base.rs"));
}

/// Counts allocations (and reallocations) of this binary.
struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// SAFETY: forwards to `System`, which keeps `GlobalAlloc`'s contract; the counter is an atomic.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller's layout, as `GlobalAlloc::alloc` requires.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `alloc` with `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: `ptr` came from `alloc` with `layout`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

type Frames = [usize; MAX_FRAMES];

/// framehop set up for this process: its unwinder with every loaded object, a cache, and the
/// bounds of the stack it may read.
struct Framehop {
    unwinder: UnwinderX86_64<&'static [u8], MustNotAllocateDuringUnwind>,
    cache: RefCell<CacheX86_64<MustNotAllocateDuringUnwind>>,
    stack_top: usize,
}

/// The modules `dl_iterate_phdr` finds, as framehop wants them.
fn loaded_modules() -> Vec<framehop::Module<&'static [u8]>> {
    extern "C" fn each(info: *mut libc::dl_phdr_info, _size: usize, data: *mut c_void) -> c_int {
        // SAFETY: `data` is the Vec `loaded_modules` passes; `info` is the loader's, valid for
        // the call, and its program headers describe mapped memory of the object.
        unsafe {
            let modules = &mut *data.cast::<Vec<framehop::Module<&'static [u8]>>>();
            let info = &*info;
            let base = info.dlpi_addr as usize;
            let phdrs = std::slice::from_raw_parts(info.dlpi_phdr, info.dlpi_phnum as usize);
            let Some(hdr) = phdrs.iter().find(|p| p.p_type == libc::PT_GNU_EH_FRAME) else {
                return 0;
            };
            let Some(text) = phdrs
                .iter()
                .find(|p| p.p_type == libc::PT_LOAD && p.p_flags & libc::PF_X != 0)
            else {
                return 0;
            };
            let hdr_svma = hdr.p_vaddr as usize;
            let hdr_avma = base + hdr_svma;
            // `.eh_frame_hdr`'s second field: `.eh_frame`, pc-relative sdata4 (as every linker
            // writes it).
            if *((hdr_avma + 1) as *const u8) != 0x1b {
                return 0;
            }
            let eh_frame_avma = (hdr_avma + 4)
                .wrapping_add(((hdr_avma + 4) as *const i32).read_unaligned() as isize as usize);
            let eh_frame_svma = eh_frame_avma - base;
            // `.eh_frame` runs to the end of its segment at most.
            let Some(segment) = phdrs.iter().find(|p| {
                p.p_type == libc::PT_LOAD
                    && (p.p_vaddr as usize..(p.p_vaddr + p.p_memsz) as usize).contains(&eh_frame_svma)
            }) else {
                return 0;
            };
            let eh_frame_end = (segment.p_vaddr + segment.p_filesz) as usize;
            let bytes = |svma: usize, len: usize| -> &'static [u8] {
                std::slice::from_raw_parts((base + svma) as *const u8, len)
            };
            let text_svma = text.p_vaddr as usize..(text.p_vaddr + text.p_memsz) as usize;
            let section_info = ExplicitModuleSectionInfo {
                base_svma: 0,
                text_svma: Some(text_svma.start as u64..text_svma.end as u64),
                text: Some(bytes(text_svma.start, text.p_filesz as usize)),
                eh_frame_svma: Some(eh_frame_svma as u64..eh_frame_end as u64),
                eh_frame: Some(bytes(eh_frame_svma, eh_frame_end - eh_frame_svma)),
                eh_frame_hdr_svma: Some(hdr_svma as u64..(hdr_svma + hdr.p_memsz as usize) as u64),
                eh_frame_hdr: Some(bytes(hdr_svma, hdr.p_memsz as usize)),
                ..Default::default()
            };
            let name = if info.dlpi_name.is_null() {
                String::new()
            } else {
                CStr::from_ptr(info.dlpi_name).to_string_lossy().into_owned()
            };
            modules.push(framehop::Module::new(
                name,
                (base + text_svma.start) as u64..(base + text_svma.end) as u64,
                base as u64,
                section_info,
            ));
        }
        0
    }
    let mut modules = Vec::new();
    // SAFETY: `each` only pushes to `modules`, which outlives the call.
    unsafe { libc::dl_iterate_phdr(Some(each), (&mut modules as *mut Vec<_>).cast()) };
    modules
}

/// The top of the calling thread's stack.
fn stack_top() -> usize {
    // SAFETY: a zeroed attribute object that `pthread_getattr_np` fills and we destroy.
    unsafe {
        let mut attr: libc::pthread_attr_t = std::mem::zeroed();
        assert_eq!(libc::pthread_getattr_np(libc::pthread_self(), &mut attr), 0);
        let (mut addr, mut size) = (std::ptr::null_mut(), 0usize);
        assert_eq!(libc::pthread_attr_getstack(&attr, &mut addr, &mut size), 0);
        libc::pthread_attr_destroy(&mut attr);
        addr as usize + size
    }
}

impl Framehop {
    /// Registers every loaded object; counts the allocations it takes.
    fn new() -> (Framehop, u64, u64, usize) {
        let before = ALLOCATIONS.load(Ordering::Relaxed);
        let modules = loaded_modules();
        let count = modules.len();
        let mut unwinder = UnwinderX86_64::new();
        for module in modules {
            unwinder.add_module(module);
        }
        let registration = ALLOCATIONS.load(Ordering::Relaxed) - before;
        let before = ALLOCATIONS.load(Ordering::Relaxed);
        let cache = RefCell::new(CacheX86_64::new_in());
        let cache_allocations = ALLOCATIONS.load(Ordering::Relaxed) - before;
        let framehop = Framehop {
            unwinder,
            cache,
            stack_top: stack_top(),
        };
        (framehop, registration, cache_allocations, count)
    }

    #[inline(never)]
    fn capture(&self, frames: &mut Frames) -> usize {
        let (rip, rsp, rbp) = cfi::registers();
        let (rip, rsp, rbp) = (rip as u64, rsp as u64, rbp as u64);
        let (low, high) = (rsp, self.stack_top as u64);
        let mut read_stack = |address: u64| -> Result<u64, ()> {
            if !address.is_multiple_of(8) || address < low || address >= high - 8 {
                return Err(());
            }
            // SAFETY: an aligned word of this thread's stack, between its stack pointer and top.
            Ok(unsafe { *(address as *const u64) })
        };
        let mut cache = self.cache.borrow_mut();
        let regs = UnwindRegsX86_64::new(rip, rsp, rbp);
        let mut iter = self.unwinder.iter_frames(rip, regs, &mut cache, &mut read_stack);
        let mut n = 0;
        // The first frame is this function's own instruction pointer: the others start with
        // the return address into the caller too.
        let _ = iter.next();
        while n < MAX_FRAMES {
            match iter.next() {
                Ok(Some(frame)) => {
                    frames[n] = frame.address() as usize;
                    n += 1;
                }
                _ => break,
            }
        }
        n
    }
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Walker {
    FramePointers,
    Libgcc,
    Cfi,
    CfiThis,
    #[cfg(unwind_base)]
    CfiBase,
    Framehop,
}

#[cfg(not(unwind_base))]
const WALKERS: &[Walker] = &[
    Walker::FramePointers,
    Walker::Libgcc,
    Walker::Cfi,
    Walker::CfiThis,
    Walker::Framehop,
];
#[cfg(unwind_base)]
const WALKERS: &[Walker] = &[
    Walker::FramePointers,
    Walker::Libgcc,
    Walker::Cfi,
    Walker::CfiThis,
    Walker::CfiBase,
    Walker::Framehop,
];

impl Walker {
    fn name(self) -> &'static str {
        match self {
            Walker::FramePointers => "fp",
            Walker::Libgcc => "libgcc",
            Walker::Cfi => "cfi",
            Walker::CfiThis => "cfi-this",
            #[cfg(unwind_base)]
            Walker::CfiBase => "cfi-base",
            Walker::Framehop => "framehop",
        }
    }
}

struct Bench {
    label: String,
    rounds: usize,
    iterations: u32,
    framehop: Framehop,
    /// (stack, walker) → ns per capture of each round, and frames.
    times: BTreeMap<(&'static str, Walker), (Vec<f64>, usize)>,
}

impl Bench {
    #[inline(never)]
    fn capture(&self, walker: Walker, frames: &mut Frames) -> usize {
        match walker {
            Walker::FramePointers => FramePointers.capture(frames, 0),
            Walker::Libgcc => Libgcc.capture(frames, 0),
            Walker::Cfi => Cfi.capture(frames, 0),
            Walker::CfiThis => cfi_this::Cfi.capture(frames, 0),
            #[cfg(unwind_base)]
            Walker::CfiBase => cfi_base::Cfi.capture(frames, 0),
            Walker::Framehop => self.framehop.capture(frames),
        }
    }

    /// What each walker finds here, against `cfi`'s frames, and what it allocates per capture.
    fn coverage(&self, stack: &str) {
        let mut found: Vec<(Walker, Vec<usize>)> = Vec::new();
        for &walker in WALKERS {
            let mut frames = [0; MAX_FRAMES];
            self.capture(walker, &mut frames);
            let before = ALLOCATIONS.load(Ordering::Relaxed);
            let n = self.capture(walker, &mut frames);
            let allocations = ALLOCATIONS.load(Ordering::Relaxed) - before;
            println!(
                "alloc\t{}\t{stack}\t{}\tper capture\t{allocations}",
                self.label,
                walker.name()
            );
            found.push((walker, frames[..n].to_vec()));
        }
        let cfi = found.iter().find(|(w, _)| *w == Walker::Cfi).unwrap().1.clone();
        for (walker, frames) in &found {
            // frames[0] is the return address into `capture`, one call site per walker.
            let common = frames
                .iter()
                .skip(1)
                .zip(cfi.iter().skip(1))
                .take_while(|(a, b)| a == b)
                .count();
            println!(
                "frames\t{}\t{stack}\t{}\t{}\tsame as cfi's for {} after the first\t{}",
                self.label,
                walker.name(),
                frames.len(),
                common,
                frames
                    .iter()
                    .map(|f| format!("{f:x}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            );
        }
    }

    /// Times every walker here: `rounds` rounds, the order rotated each round.
    fn time(&mut self, stack: &'static str) {
        let mut frames = [0; MAX_FRAMES];
        for &walker in WALKERS {
            // Rules cached, lazy set-up done.
            for _ in 0..100 {
                self.capture(walker, &mut frames);
            }
        }
        for round in 0..self.rounds {
            for k in 0..WALKERS.len() {
                let walker = WALKERS[(round + k) % WALKERS.len()];
                let mut n = 0;
                let start = Instant::now();
                for _ in 0..self.iterations {
                    n = self.capture(walker, &mut frames);
                    std::hint::black_box(&frames);
                }
                let ns = start.elapsed().as_nanos() as f64 / f64::from(self.iterations);
                println!(
                    "time\t{}\t{stack}\t{}\t{round}\t{ns:.1}\t{n}",
                    self.label,
                    walker.name()
                );
                let entry = self.times.entry((stack, walker)).or_default();
                entry.0.push(ns);
                entry.1 = n;
            }
        }
    }
}

#[inline(never)]
fn recurse(depth: usize, at_bottom: &mut dyn FnMut()) {
    if depth == 0 {
        at_bottom();
    } else {
        recurse(depth - 1, at_bottom);
    }
    std::hint::black_box(depth);
}

/// Hand-made functions without unwind tables, each `push rbp; mov rbp, rsp; call <next>; pop rbp;
/// ret`, the last calling `target(arg)` (its arguments in rdi and rsi, passed down unchanged).
fn trampolines(count: usize) -> usize {
    let page = tally_pal::map(tally_pal::PAGE) as usize;
    assert_ne!(page, 0);
    let size = 32;
    let mut code = vec![0u8; tally_pal::PAGE];
    for i in 0..count {
        let at = i * size;
        let mut f = vec![0x55, 0x48, 0x89, 0xe5];
        if i + 1 < count {
            f.extend_from_slice(&[0x48, 0xb8]); // movabs rax, next
            f.extend_from_slice(&(page + at + size).to_le_bytes());
        } else {
            f.extend_from_slice(&[0x48, 0x89, 0xf8, 0x48, 0x89, 0xf7]); // mov rax, rdi; mov rdi, rsi
        }
        f.extend_from_slice(&[0xff, 0xd0, 0x5d, 0xc3]); // call rax; pop rbp; ret
        code[at..at + f.len()].copy_from_slice(&f);
    }
    // SAFETY: a fresh page of ours: the code goes in, then it becomes read-only and executable.
    unsafe {
        std::ptr::copy_nonoverlapping(code.as_ptr(), page as *mut u8, code.len());
        assert_eq!(
            libc::mprotect(
                page as *mut c_void,
                tally_pal::PAGE,
                libc::PROT_READ | libc::PROT_EXEC
            ),
            0
        );
    }
    page
}

type Body<'a> = &'a mut dyn FnMut();

extern "C" fn call_body(arg: *mut c_void) {
    // SAFETY: `arg` is the `Body` that `through_trampolines` passes, alive for the call.
    let body = unsafe { &mut *arg.cast::<Body<'_>>() };
    recurse(10, *body);
}

#[inline(never)]
fn through_trampolines(code: usize, mut body: Body<'_>) {
    // SAFETY: the first hand-made function has this signature and keeps the ABI's rules.
    let f =
        unsafe { std::mem::transmute::<usize, extern "C" fn(extern "C" fn(*mut c_void), *mut c_void)>(code) };
    f(call_body, (&mut body as *mut Body<'_>).cast());
}

static IN_QSORT: AtomicBool = AtomicBool::new(false);
thread_local! {
    static QSORT_BODY: RefCell<Option<Box<dyn FnMut()>>> = RefCell::new(None);
}

extern "C" fn compare(a: *const c_void, b: *const c_void) -> c_int {
    if !IN_QSORT.swap(true, Ordering::Relaxed) {
        QSORT_BODY.with(|body| {
            if let Some(body) = body.borrow_mut().as_mut() {
                body();
            }
        });
    }
    // SAFETY: qsort passes pointers to two elements of the `u32` array it sorts.
    unsafe { (*a.cast::<u32>()).cmp(&*b.cast::<u32>()) as c_int }
}

static SIGNAL_ARMED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: c_int) {
    if SIGNAL_ARMED.load(Ordering::Relaxed) {
        BENCH.with(|b| b.borrow().as_ref().unwrap().coverage("signal"));
    }
}

thread_local! {
    static BENCH: RefCell<Option<Bench>> = const { RefCell::new(None) };
}

/// The medians of every `time` line in `paths`, over all runs and rounds, per stack and walker.
fn summarize(paths: &[String]) {
    let mut times: BTreeMap<(String, String), (Vec<f64>, usize)> = BTreeMap::new();
    for path in paths {
        for line in std::fs::read_to_string(path).unwrap().lines() {
            let f: Vec<&str> = line.split('\t').collect();
            if f.len() == 7 && f[0] == "time" {
                let entry = times.entry((f[2].to_string(), f[3].to_string())).or_default();
                entry.0.push(f[5].parse().unwrap());
                entry.1 = f[6].parse().unwrap();
            }
        }
    }
    println!("| stack | walker | ns per capture (median) | rounds | frames | ns per frame |");
    println!("| --- | --- | ---: | ---: | ---: | ---: |");
    for ((stack, walker), (ns, frames)) in &times {
        let m = median(ns).unwrap();
        println!(
            "| {stack} | {walker} | {m:.0} | {} | {frames} | {:.1} |",
            ns.len(),
            m / (*frames).max(1) as f64
        );
    }
}

/// `--count STACK WALKER N`: N captures by WALKER on STACK (`rust` or `jit`), nothing else; for
/// counting instructions per capture under callgrind (two values of N, the difference).
fn count(stack: &str, walker: &str, n: u32) {
    tally_profiler::prepare();
    let walker = *WALKERS
        .iter()
        .find(|w| w.name() == walker)
        .unwrap_or_else(|| panic!("no walker {walker}"));
    let (framehop, ..) = Framehop::new();
    let bench = Bench {
        label: String::new(),
        rounds: 0,
        iterations: 0,
        framehop,
        times: BTreeMap::new(),
    };
    let mut frames = [0; MAX_FRAMES];
    let mut repeat = || {
        for _ in 0..n {
            bench.capture(walker, &mut frames);
            std::hint::black_box(&frames);
        }
    };
    match stack {
        "rust" => recurse(20, &mut repeat),
        "jit" => {
            let code = trampolines(8);
            recurse(10, &mut || through_trampolines(code, &mut repeat));
        }
        _ => panic!("no stack {stack}"),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--summarize") {
        summarize(&args[1..]);
        return;
    }
    if args.first().map(String::as_str) == Some("--count") {
        count(&args[1], &args[2], args[3].parse().unwrap());
        return;
    }
    let mut label = "this".to_string();
    let mut rounds = 7;
    let mut iterations = 100_000u32;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--label" => label = it.next().unwrap().clone(),
            "--rounds" => rounds = it.next().unwrap().parse().unwrap(),
            "--iterations" => iterations = it.next().unwrap().parse().unwrap(),
            _ => panic!("unknown argument {a}"),
        }
    }
    tally_profiler::prepare();
    Libgcc.prepare();
    let (framehop, registration, cache, modules) = Framehop::new();
    println!("alloc\t{label}\tsetup\tframehop\tregistering {modules} modules\t{registration}");
    println!("alloc\t{label}\tsetup\tframehop\tcache\t{cache}");
    let mut bench = Bench {
        label: label.clone(),
        rounds,
        iterations,
        framehop,
        times: BTreeMap::new(),
    };

    recurse(20, &mut || {
        bench.coverage("rust");
        bench.time("rust");
    });
    let code = trampolines(8);
    recurse(10, &mut || {
        through_trampolines(code, &mut || {
            bench.coverage("jit");
            bench.time("jit");
        })
    });

    // A C caller: the first comparison of glibc's qsort.
    let bench = RefCell::new(Some(bench));
    {
        let bench_ptr: *const RefCell<Option<Bench>> = &bench;
        QSORT_BODY.with(|b| {
            *b.borrow_mut() = Some(Box::new(move || {
                // SAFETY: `bench` outlives the qsort call that runs this.
                let bench = unsafe { &*bench_ptr };
                bench.borrow().as_ref().unwrap().coverage("c");
            }))
        });
        let mut values: Vec<u32> = (0..64).rev().collect();
        // SAFETY: an array of 64 `u32`s and a comparison of two of them.
        unsafe {
            libc::qsort(values.as_mut_ptr().cast(), values.len(), 4, Some(compare));
        }
    }

    // A signal frame: the handler's captures.
    let bench = bench.into_inner().unwrap();
    let times = {
        BENCH.with(|b| *b.borrow_mut() = Some(bench));
        SIGNAL_ARMED.store(true, Ordering::Relaxed);
        // SAFETY: installs a handler that runs the coverage check on this thread.
        unsafe {
            libc::signal(
                libc::SIGUSR1,
                on_signal as extern "C" fn(c_int) as libc::sighandler_t,
            );
        }
        recurse(10, &mut || {
            // SAFETY: raises a signal whose handler was just installed.
            unsafe { libc::raise(libc::SIGUSR1) };
        });
        BENCH.with(|b| b.borrow_mut().take().unwrap().times)
    };

    println!("\n| stack | walker | ns per capture (median of {rounds}) | frames | ns per frame |");
    println!("| --- | --- | ---: | ---: | ---: |");
    for ((stack, walker), (ns, frames)) in &times {
        let m = median(ns).unwrap();
        println!(
            "| {stack} | {} | {m:.0} | {frames} | {:.1} |",
            walker.name(),
            m / (*frames).max(1) as f64
        );
    }
}
