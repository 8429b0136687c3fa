//! Memory from the kernel: anonymous mappings, advice, `mremap`, and asking whether a page is
//! mapped.

use core::ffi::c_void;
use core::ptr;

/// The page size Tally is built for. Checked against the kernel's at initialization.
pub const PAGE: usize = 4096;
/// log2 of [`PAGE`].
pub const PAGE_SHIFT: u32 = 12;
const _: () = assert!(1 << PAGE_SHIFT == PAGE);

/// Maps `size` bytes of fresh, zeroed, read-write anonymous memory, reserved lazily
/// (`MAP_NORESERVE`: pages cost memory only once touched, and under the kernel's default
/// overcommit heuristic the mapping is never refused for its size). For Tally's own tables and
/// chunks. Null when the kernel refuses.
#[inline]
pub fn map(size: usize) -> *mut u8 {
    map_anonymous(size, libc::MAP_NORESERVE)
}

/// Maps `size` bytes like [`map`], but counted against the kernel's overcommit policy (no
/// `MAP_NORESERVE`), as glibc maps its large blocks: the kernel refuses a mapping it judges it
/// cannot back. With `vm.overcommit_memory=0` (the default heuristic) that is one mapping larger
/// than RAM + swap; with 2 (strict) anything beyond the commit limit; with 1 nothing. For memory
/// handed to a program as one block, so that `malloc(1 << 46)` fails at once as in glibc instead
/// of succeeding and faulting later. Null when the kernel refuses.
#[inline]
pub fn map_accounted(size: usize) -> *mut u8 {
    map_anonymous(size, 0)
}

/// `mmap` of `size` bytes, private, anonymous, read-write, with `extra` flags.
#[inline]
fn map_anonymous(size: usize, extra: libc::c_int) -> *mut u8 {
    map_with(0, size, libc::PROT_READ | libc::PROT_WRITE, extra)
}

/// `mmap` of `size` bytes, private and anonymous, with protection `prot` and `extra` flags, at
/// `hint` if that range is free (0: no preference), else at an address of the kernel's choosing.
/// Null when the kernel refuses.
#[inline]
fn map_with(hint: usize, size: usize, prot: libc::c_int, extra: libc::c_int) -> *mut u8 {
    // SAFETY: without MAP_FIXED the hint only suggests a place: the kernel never replaces an
    // existing mapping, so the new one touches no existing memory; the arguments are valid by
    // construction.
    let p = unsafe {
        libc::mmap(
            hint as *mut c_void,
            size,
            prot,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | extra,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        ptr::null_mut()
    } else {
        p.cast()
    }
}

/// Maps `size` bytes aligned to `align` (a power of two, at least [`PAGE`]; `size` a page
/// multiple), reserved lazily as by [`map`].
///
/// Over-maps by `align` and unmaps the slack on both sides, so only `size` bytes stay mapped.
/// Returns null when the kernel refuses.
#[inline]
pub fn map_aligned(size: usize, align: usize) -> *mut u8 {
    map_aligned_with(size, align, map)
}

/// Maps `size` bytes aligned to `align` like [`map_aligned`], counted against the overcommit
/// policy as by [`map_accounted`].
#[inline]
pub fn map_aligned_accounted(size: usize, align: usize) -> *mut u8 {
    map_aligned_with(size, align, map_accounted)
}

#[inline]
fn map_aligned_with(size: usize, align: usize, map: fn(usize) -> *mut u8) -> *mut u8 {
    debug_assert!(align.is_power_of_two() && align >= PAGE && size % PAGE == 0);
    let Some(total) = size.checked_add(align) else {
        return ptr::null_mut();
    };
    let raw = map(total);
    if raw.is_null() {
        return raw;
    }
    let start = raw as usize;
    let aligned = (start + align - 1) & !(align - 1);
    let lead = aligned - start;
    let trail = total - lead - size;
    // SAFETY: both ranges lie inside the mapping just made and are page multiples; nothing else
    // refers to them yet.
    unsafe {
        if lead != 0 {
            unmap(raw, lead);
        }
        if trail != 0 {
            unmap((aligned + size) as *mut u8, trail);
        }
    }
    aligned as *mut u8
}

/// Unmaps `[p, p + size)`.
///
/// # Safety
/// The range must be mapped memory that the caller owns and that nothing will touch again.
#[inline]
pub unsafe fn unmap(p: *mut u8, size: usize) {
    // SAFETY: the caller owns the range and promises it is dead.
    let rc = unsafe { libc::munmap(p.cast(), size) };
    debug_assert_eq!(rc, 0);
}

/// Gives the pages of `[p, p + size)` back to the OS now (`MADV_DONTNEED`): they stop counting
/// as resident and read as zero when touched again.
///
/// # Safety
/// The range must be page-aligned memory owned by the caller whose contents are dead.
#[inline]
pub unsafe fn discard(p: *mut u8, size: usize) {
    // SAFETY: the caller owns the range and promises its contents are dead.
    unsafe { libc::madvise(p.cast(), size, libc::MADV_DONTNEED) };
}

/// Lets the OS take the pages of `[p, p + size)` when it needs memory (`MADV_FREE`); until then
/// they stay resident and keep their contents.
///
/// # Safety
/// The range must be page-aligned memory owned by the caller whose contents are dead.
#[inline]
pub unsafe fn discard_lazily(p: *mut u8, size: usize) {
    // SAFETY: the caller owns the range and promises its contents are dead.
    unsafe { libc::madvise(p.cast(), size, libc::MADV_FREE) };
}

/// Advice on transparent huge pages for a range ([`advise_huge_pages`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HugePages {
    /// `MADV_HUGEPAGE`: the kernel may back the range with huge pages even where its policy
    /// (`/sys/kernel/mm/transparent_hugepage/enabled`) is `madvise`.
    Wanted,
    /// `MADV_NOHUGEPAGE`: no huge pages for the range, not even where the policy is `always`,
    /// and `khugepaged` leaves it alone.
    Refused,
}

/// Gives the kernel `advice` on huge pages for `[p, p + size)` (`madvise`); pages already
/// resident stay as they are. Returns false when the kernel refuses, as one built without
/// transparent huge pages does (`EINVAL`); the range is then unchanged.
///
/// # Safety
/// The range must be page-aligned, mapped and owned by the caller.
#[inline]
pub unsafe fn advise_huge_pages(p: *mut u8, size: usize, advice: HugePages) -> bool {
    let how = match advice {
        HugePages::Wanted => libc::MADV_HUGEPAGE,
        HugePages::Refused => libc::MADV_NOHUGEPAGE,
    };
    // SAFETY: the caller owns the range; the advice changes how its future faults are served,
    // never its contents.
    unsafe { libc::madvise(p.cast(), size, how) == 0 }
}

/// Moves or resizes the mapping `[old, old + old_size)` to `[new, new + new_size)` without
/// copying, replacing whatever was mapped at `new` (which must be a reservation the caller
/// owns).
///
/// Returns false when the kernel refuses; the old mapping is then unchanged.
///
/// # Safety
/// `old` must be a whole mapping owned by the caller; `[new, new + new_size)` must be owned by
/// the caller and unused.
#[inline]
pub unsafe fn remap_to(old: *mut u8, old_size: usize, new: *mut u8, new_size: usize) -> bool {
    // SAFETY: both ranges are owned by the caller per the contract.
    let p = unsafe {
        libc::mremap(
            old.cast(),
            old_size,
            new_size,
            libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED,
            new.cast::<c_void>(),
        )
    };
    p != libc::MAP_FAILED
}

/// Grows or shrinks the mapping at `old` in place. Returns false when it cannot grow in place.
///
/// # Safety
/// `old` must be a whole mapping owned by the caller, `old_size` its length.
#[inline]
pub unsafe fn remap_in_place(old: *mut u8, old_size: usize, new_size: usize) -> bool {
    // SAFETY: without MREMAP_MAYMOVE the kernel only resizes the caller's own mapping.
    let p = unsafe { libc::mremap(old.cast(), old_size, new_size, 0) };
    p != libc::MAP_FAILED
}

/// Reserves `size` bytes of address space that no access may touch (`PROT_NONE`, lazily
/// reserved): guard pages, made accessible piece by piece with [`protect_rw`]. Null when the
/// kernel refuses.
#[inline]
pub fn reserve(size: usize) -> *mut u8 {
    map_with(0, size, libc::PROT_NONE, libc::MAP_NORESERVE)
}

/// Reserves `size` bytes of address space like [`reserve`], at `hint` if that range is free
/// (the kernel picks another place if not; the caller checks). Null when the kernel refuses.
#[inline]
pub fn reserve_near(hint: usize, size: usize) -> *mut u8 {
    map_with(hint, size, libc::PROT_NONE, libc::MAP_NORESERVE)
}

/// Makes `[p, p + size)` readable and writable (`mprotect`). Returns false when the kernel
/// refuses (out of memory for the split mapping, or the map count limit).
///
/// # Safety
/// The range must be page-aligned, inside a reservation the caller owns.
#[inline]
pub unsafe fn protect_rw(p: *mut u8, size: usize) -> bool {
    // SAFETY: per the contract the range is the caller's.
    unsafe { libc::mprotect(p.cast(), size, libc::PROT_READ | libc::PROT_WRITE) == 0 }
}

/// Makes `[p, p + size)` inaccessible again (`mprotect`); its pages keep their contents and
/// stay resident. Returns false when the kernel refuses.
///
/// # Safety
/// The range must be page-aligned, inside a mapping the caller owns, its contents dead.
#[inline]
pub unsafe fn protect_none(p: *mut u8, size: usize) -> bool {
    // SAFETY: per the contract the range is the caller's.
    unsafe { libc::mprotect(p.cast(), size, libc::PROT_NONE) == 0 }
}

/// Whether the page holding `addr` is mapped (`mincore` fails with `ENOMEM` on unmapped
/// memory). Says nothing about `PROT_NONE`.
#[inline]
pub fn page_is_mapped(addr: usize) -> bool {
    let page = addr & !(PAGE - 1);
    let mut vec = 0u8;
    // SAFETY: mincore only reads the page tables for the range and writes one byte to `vec`.
    unsafe { libc::mincore(page as *mut c_void, 1, &mut vec) == 0 }
}

/// Whether every page of `[start, end)` is mapped (`start` page-aligned, `end` rounded up to a
/// page), asked in a few `mincore` calls (one per 256 pages) with the answer vector on the stack.
/// Like [`page_is_mapped`], says nothing about `PROT_NONE`.
#[inline]
pub fn range_is_mapped(start: usize, end: usize) -> bool {
    const CHUNK: usize = 256;
    let mut vec = [0u8; CHUNK];
    let mut at = start & !(PAGE - 1);
    while at < end {
        let len = (end - at).min(CHUNK * PAGE);
        // SAFETY: mincore only reads the page tables for the range and writes one byte per page
        // of it (at most `CHUNK`) to `vec`.
        if unsafe { libc::mincore(at as *mut c_void, len, vec.as_mut_ptr()) } != 0 {
            return false;
        }
        at += len.next_multiple_of(PAGE);
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligned_mappings_are_aligned_zeroed_and_known_to_mincore() {
        let align = 4 << 20;
        let p = map_aligned(3 * PAGE, align);
        assert!(!p.is_null());
        assert_eq!(p as usize % align, 0);
        assert!(page_is_mapped(p as usize));
        // SAFETY: the three pages were just mapped for this test.
        unsafe {
            assert_eq!(*p.add(3 * PAGE - 1), 0);
            *p = 7;
            discard(p, PAGE);
            assert_eq!(*p, 0, "MADV_DONTNEED'd anonymous pages read as zero");
            // The middle page only: a one-page hole between two pages this test still holds,
            // which no other test's mapping (all larger) can take before the check. (Unmapping
            // all three left a hole another test thread's mapping could fill first: CI saw it.)
            unmap(p.add(PAGE), PAGE);
        }
        assert!(!page_is_mapped(p as usize + PAGE));
        assert!(page_is_mapped(p as usize) && page_is_mapped(p as usize + 2 * PAGE));
        // SAFETY: the two pages left of the mapping.
        unsafe {
            unmap(p, PAGE);
            unmap(p.add(2 * PAGE), PAGE);
        }
    }

    #[test]
    fn ranges_are_mapped_only_when_every_page_is() {
        // 600 pages (more than one mincore call), the 150th unmapped.
        let pages = 600;
        let p = map(pages * PAGE) as usize;
        assert_ne!(p, 0);
        assert!(range_is_mapped(p, p + pages * PAGE));
        // SAFETY: one page of the mapping just made.
        unsafe { unmap((p + 149 * PAGE) as *mut u8, PAGE) };
        assert!(range_is_mapped(p, p + 149 * PAGE));
        assert!(
            !range_is_mapped(p, p + 149 * PAGE + 1),
            "the end is rounded up to a page"
        );
        assert!(!range_is_mapped(p, p + pages * PAGE));
        assert!(range_is_mapped(p + 150 * PAGE, p + pages * PAGE));
        assert!(!range_is_mapped(p + 100, p + pages * PAGE - 100));
        // SAFETY: the rest of the mapping, in two parts around the hole.
        unsafe {
            unmap(p as *mut u8, 149 * PAGE);
            unmap((p + 150 * PAGE) as *mut u8, (pages - 150) * PAGE);
        }
    }

    /// Accounted mappings answer to the kernel's overcommit policy, lazy ones do not (except
    /// under strict accounting, which ignores `MAP_NORESERVE`): 64 TiB, far beyond this
    /// machine's RAM + swap but inside the 128 TiB address space.
    #[test]
    fn accounted_mappings_answer_to_the_overcommit_policy() {
        let absurd = 1usize << 46;
        let policy = std::fs::read_to_string("/proc/sys/vm/overcommit_memory").unwrap();
        let (lazy_ok, accounted_ok) = match policy.trim() {
            "0" => (true, false),
            "1" => (true, true),
            "2" => (false, false),
            other => panic!("vm.overcommit_memory = {other}?"),
        };
        for (p, ok, what) in [
            (map(absurd), lazy_ok, "map"),
            (map_accounted(absurd), accounted_ok, "map_accounted"),
            (
                map_aligned_accounted(absurd, 4 << 20),
                accounted_ok,
                "map_aligned_accounted",
            ),
        ] {
            assert_eq!(!p.is_null(), ok, "{what}(64 TiB) under policy {policy}");
            if !p.is_null() {
                // SAFETY: the mapping just made, never touched.
                unsafe { unmap(p, absurd) };
            }
        }
        let p = map_aligned_accounted(3 * PAGE, 4 << 20);
        assert!(!p.is_null() && p as usize % (4 << 20) == 0);
        // SAFETY: the three pages were just mapped for this test.
        unsafe {
            *p.add(3 * PAGE - 1) = 1;
            unmap(p, 3 * PAGE);
        }
    }

    #[test]
    fn reserved_pages_open_and_close() {
        let p = reserve(3 * PAGE);
        assert!(!p.is_null());
        assert!(page_is_mapped(p as usize), "a PROT_NONE reservation is mapped");
        // SAFETY: the reservation was just made for this test; the page in its middle is opened,
        // written, read, closed and opened again; nothing else refers to it.
        unsafe {
            assert!(protect_rw(p.add(PAGE), PAGE));
            *p.add(PAGE + 5) = 9;
            assert_eq!(*p.add(PAGE + 5), 9);
            assert!(protect_none(p.add(PAGE), PAGE));
            assert!(protect_rw(p.add(PAGE), PAGE));
            assert_eq!(
                *p.add(PAGE + 5),
                9,
                "a page closed and opened again keeps its contents"
            );
            unmap(p, 3 * PAGE);
        }
    }

    #[test]
    fn huge_page_advice_is_taken_where_the_kernel_has_huge_pages() {
        // What the advice does to the mapping (`VmFlags` in smaps) is read back by the
        // allocator's `tests/thp.rs`; here, that the kernel takes both kinds.
        let thp = std::path::Path::new("/sys/kernel/mm/transparent_hugepage").exists();
        let len = 4 << 20;
        let p = map_aligned(len, len);
        assert!(!p.is_null());
        // SAFETY: the mapping was just made for this test and is unmapped at its end; advice
        // leaves its (zero) contents alone.
        unsafe {
            assert_eq!(advise_huge_pages(p, len, HugePages::Refused), thp);
            assert_eq!(advise_huge_pages(p, len, HugePages::Wanted), thp);
            *p.add(len - 1) = 7;
            assert_eq!(advise_huge_pages(p, len, HugePages::Refused), thp);
            assert_eq!((*p, *p.add(len - 1)), (0, 7), "advice keeps the contents");
            unmap(p, len);
        }
    }

    #[test]
    fn remap_grows_in_place_or_reports_it_cannot() {
        let p = map(PAGE);
        assert!(!p.is_null());
        // SAFETY: `p` is our own one-page mapping; on success it is two pages long.
        unsafe {
            if remap_in_place(p, PAGE, 2 * PAGE) {
                *p.add(PAGE) = 1;
                unmap(p, 2 * PAGE);
            } else {
                unmap(p, PAGE);
            }
        }
    }
}
