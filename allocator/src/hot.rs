//! The read-only data every program reads: kept beside the dynamic symbols in the library's
//! first segment, so that the rest of the read-only data is never made resident.
//!
//! The kernel maps a file's pages in 64 KiB windows around each page a program touches
//! (fault-around), and all of a window counts in the program's resident memory. The dynamic
//! symbols, their hash table and the relocations (which the dynamic linker reads in every
//! program) take 9 KiB; the compiler's read-only data is 120 KiB, and the exception tables
//! 100 KiB more. With them in one segment, a program made a whole window of it resident (64 KiB)
//! to read the symbols and the size-class tables. `allocator/hot-text.ld` now puts the
//! compiler's read-only data after the code, in a segment of its own, and keeps in the first
//! segment only what the allocator reads in every program: the statics defined here (section
//! `.rodata.hot.tally`), the compiler's 4-32 byte constants and Tally's jump tables.
//! `scripts/check-hot-text.sh` checks that a small C program and CPython touch no page of the
//! segment after the code.
//!
//! A static is found through the GOT in position-independent Rust code, even a private one of
//! the library's own: one load more than a `const`, whose private copy the compiler addresses
//! relative to the instruction pointer. [`hot_data!`] defines a function returning a static of
//! `.rodata.hot.tally` that takes its address relative to the instruction pointer too (one
//! `lea`, as for a `const`), so the fast paths' budgets do not change.

/// `hot_data! { fn name() -> &'static T = VALUE; }` defines `name`, the address of a static
/// holding `VALUE` in section `.rodata.hot.tally` (see the module's docs). The value stays a
/// `const` item of its own for constant evaluation (static asserts, tables built from tables).
macro_rules! hot_data {
    ($(#[$attr:meta])* $vis:vis fn $name:ident() -> &'static $ty:ty = $value:expr;) => {
        $(#[$attr])*
        #[inline(always)]
        $vis fn $name() -> &'static $ty {
            #[link_section = ".rodata.hot.tally"]
            static HOT: $ty = $value;
            #[cfg(target_arch = "x86_64")]
            {
                let p: *const $ty;
                // SAFETY: `lea` computes the static's address relative to the instruction
                // pointer (the static is the library's own, never preempted); it reads and
                // writes nothing.
                unsafe {
                    core::arch::asm!(
                        "lea {p}, [rip + {hot}]",
                        hot = sym HOT,
                        p = out(reg) p,
                        options(pure, nomem, nostack, preserves_flags)
                    );
                }
                // SAFETY: `p` is the address of `HOT`, an immutable static.
                unsafe { &*p }
            }
            #[cfg(not(target_arch = "x86_64"))]
            {
                &HOT
            }
        }
    };
}

pub(crate) use hot_data;

/// `hot_load!(STATIC)` reads the `AtomicUsize` static `STATIC` (the library's own) with relaxed
/// ordering in one instruction: a load relative to the instruction pointer, where the compiler
/// first loads the static's address from the GOT (see the module's docs). For the fast paths'
/// reads of process-wide words: Rust's `dealloc` reads two (the free mark's key, the mask of
/// blocks that may be sampled or guarded).
macro_rules! hot_load {
    ($static:path) => {{
        let _: &core::sync::atomic::AtomicUsize = &$static;
        #[cfg(target_arch = "x86_64")]
        {
            let value: usize;
            // SAFETY: reads the word of the static, which is the library's own (never
            // preempted), an `AtomicUsize` (a plain aligned `mov` is a relaxed atomic load on
            // x86-64); it writes nothing.
            unsafe {
                core::arch::asm!(
                    "mov {value}, qword ptr [rip + {word}]",
                    word = sym $static,
                    value = out(reg) value,
                    options(nostack, preserves_flags, readonly)
                );
            }
            value
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            $static.load(core::sync::atomic::Ordering::Relaxed)
        }
    }};
}

pub(crate) use hot_load;
