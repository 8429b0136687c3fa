//! Which functions belong to the allocator, so that a report (`tally report`) or a profile served
//! by the process (`prof_http`, `tally::prof::pprof()`) starts at the code that asked for memory
//! rather than at `malloc`.
//!
//! Stacks are recorded from inside the allocator. As jeprof does (`RemoveUninterestingFrames`),
//! the report walks each stack from the innermost frame and, at the last frame whose function is
//! an allocation entry point, throws away that frame and everything inside it. The names are
//! jeprof's list (the C, C++, tcmalloc and jemalloc entry points) plus Rust's global-allocator
//! shims, so that Rust programs profiled through `#[global_allocator]` read the same way.

/// Allocation entry points, by exact (demangled, shortened) name.
const ENTRY_POINTS: &[&str] = &[
    // jeprof's list.
    "calloc",
    "cfree",
    "malloc",
    "newImpl",
    "void* newImpl",
    "free",
    "memalign",
    "posix_memalign",
    "aligned_alloc",
    "pvalloc",
    "valloc",
    "realloc",
    "mallocx",
    "rallocx",
    "xallocx",
    "dallocx",
    "sdallocx",
    "sdallocx_noflags",
    "tc_calloc",
    "tc_cfree",
    "tc_malloc",
    "tc_free",
    "tc_memalign",
    "tc_posix_memalign",
    "tc_pvalloc",
    "tc_valloc",
    "tc_realloc",
    "tc_new",
    "tc_delete",
    "tc_newarray",
    "tc_deletearray",
    "tc_new_nothrow",
    "tc_newarray_nothrow",
    "do_malloc",
    "::do_malloc",
    "::do_malloc_or_cpp_alloc",
    "DoSampledAllocation",
    "simple_alloc::allocate",
    "__malloc_alloc_template::allocate",
    "__builtin_delete",
    "__builtin_new",
    "__builtin_vec_delete",
    "__builtin_vec_new",
    "operator new",
    "operator new[]",
    "malloc_zone_malloc",
    "malloc_zone_calloc",
    "malloc_zone_valloc",
    "malloc_zone_realloc",
    "malloc_zone_memalign",
    "malloc_zone_free",
    "__start_google_malloc",
    "__stop_google_malloc",
    "__start_malloc_hook",
    "__stop_malloc_hook",
    // The rest of the C family that Tally exports.
    "reallocarray",
    "free_sized",
    "free_aligned_sized",
    // Rust's global allocator shims.
    "__rust_alloc",
    "__rust_alloc_zeroed",
    "__rust_realloc",
    "__rg_alloc",
    "__rg_alloc_zeroed",
    "__rg_realloc",
    "__rdl_alloc",
    "__rdl_alloc_zeroed",
    "__rdl_realloc",
];

/// Whether `name` (demangled) is an allocation entry point.
pub fn is_entry_point(name: &str) -> bool {
    // Rust 1.7x+ puts the allocator shims in a `__rustc` namespace.
    let name = name.strip_prefix("__rustc::").unwrap_or(name);
    let unprefixed = name.strip_prefix('_').unwrap_or("");
    ENTRY_POINTS.contains(&name)
        || ENTRY_POINTS.contains(&unprefixed)
        || name.contains("TCMalloc")
        || name.starts_with("tcmalloc::")
        // Tally's own code, when it is linked into the program (`#[global_allocator]`).
        || name.starts_with("tally::")
        || name.starts_with("<tally::")
        || name.starts_with("<std::alloc::System as core::alloc::global::GlobalAlloc>::")
}

/// Whether `name` (demangled, as a report row shows it: maybe with ` (inline)` and a file:line)
/// is Rust's allocation machinery between an entry point and the code that asked for memory:
/// `alloc::` (Box, Vec, RawVec, String...), `core::alloc::`, `std::alloc::`, `std::sys::alloc`,
/// the `__rustc` shims, and Tally itself. A report attributes memory to the first frame past
/// these, the function that asked for it.
pub fn is_rust_alloc_machinery(name: &str) -> bool {
    let name = name.trim_start_matches('<');
    ["alloc::", "core::alloc::", "std::alloc::", "std::sys::alloc", "__rustc::", "tally::"]
        .iter()
        .any(|prefix| name.starts_with(prefix))
        // Trait impls of the alloc crate for other types: `<u8 as alloc::vec::...>::from_elem`.
        || name.contains(" as alloc::")
        || name.contains(" as core::alloc::")
}

/// Whether a report row's name (a function, maybe with ` (inline)` and ` file:line`) is an
/// entry point or Rust's allocation machinery: such a row, inlined into the caller's frame, does
/// not get the caller's flat value.
pub fn is_allocator_row(name: &str) -> bool {
    let function = match name.find(" (inline)") {
        Some(i) => &name[..i],
        None => match name.rsplit_once(' ') {
            Some((f, place)) if place.contains(':') && place.contains('/') => f,
            _ => name,
        },
    };
    is_entry_point(function) || is_rust_alloc_machinery(function)
}

#[cfg(test)]
mod tests {
    use super::is_entry_point;

    #[test]
    fn knows_the_entry_points() {
        assert!(is_entry_point("malloc"));
        assert!(is_entry_point("_malloc"));
        assert!(is_entry_point("operator new"));
        assert!(is_entry_point("__rust_alloc"));
        assert!(is_entry_point(
            "<tally::Tally as core::alloc::global::GlobalAlloc>::alloc"
        ));
        assert!(!is_entry_point("leak_a"));
        assert!(!is_entry_point("mallocx_wrapper"));
        assert!(is_entry_point("__rustc::__rdl_alloc"));
        assert!(is_entry_point("tally::heap::alloc_small_miss"));
    }

    #[test]
    fn knows_allocator_rows() {
        assert!(super::is_allocator_row("malloc (inline)"));
        assert!(super::is_allocator_row("malloc (inline) /x/capi.rs:12"));
        assert!(super::is_allocator_row("tally::api::malloc /x/api.rs:30"));
        assert!(!super::is_allocator_row("leak_a /x/leak.c:10"));
    }

    #[test]
    fn knows_rust_machinery() {
        use super::is_rust_alloc_machinery as m;
        assert!(m("alloc::raw_vec::RawVec<T>::allocate_in (inline)"));
        assert!(m(
            "<alloc::alloc::Global as core::alloc::Allocator>::allocate (inline)"
        ));
        assert!(m(
            "alloc::vec::Vec<T>::with_capacity (inline) /rustc/x/library/alloc/src/vec/mod.rs:1"
        ));
        assert!(m(
            "<u8 as alloc::vec::spec_from_elem::SpecFromElem>::from_elem (inline)"
        ));
        assert!(!m("rust_leak::leaky::Cache::fill"));
        assert!(!m("allocate_buffers"));
    }
}
