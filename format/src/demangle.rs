//! Symbol names as people write them: Rust (legacy `_ZN…17h<hash>E` and v0 `_R…`) through
//! `rustc-demangle`, C++ (`_Z…`) through `cpp_demangle`, everything else as it is.
//!
//! Names are shortened the way jeprof shortens them for its function-level report: Rust names
//! lose their hash, C++ names their parameter lists (`ns::f(int) const` → `ns::f`), and a symbol
//! version (`memcpy@@GLIBC_2.14`) is dropped.

use std::format;
use std::string::{String, ToString};

/// The readable form of a symbol or DWARF linkage name.
pub fn demangle(name: &str) -> String {
    let name = strip_version(name);
    if let Ok(rust) = rustc_demangle::try_demangle(name) {
        return format!("{rust:#}");
    }
    if name.starts_with("_Z") {
        if let Ok(symbol) = cpp_demangle::Symbol::new(name) {
            let options = cpp_demangle::DemangleOptions::new().no_params().no_return_type();
            if let Ok(text) = symbol.demangle_with_options(&options) {
                return text;
            }
        }
    }
    name.to_string()
}

/// `name@VERSION` or `name@@VERSION` → `name`.
fn strip_version(name: &str) -> &str {
    match name.find('@') {
        Some(at) if at > 0 => &name[..at],
        _ => name,
    }
}

#[cfg(test)]
mod tests {
    use super::demangle;

    #[test]
    fn demangles_rust_and_cpp() {
        assert_eq!(
            demangle("_ZN4core3fmt5write17h0123456789abcdefE"),
            "core::fmt::write"
        );
        assert_eq!(demangle("_RNvCs1234_7mycrate4main"), "mycrate::main");
        assert_eq!(demangle("_ZN3foo3barEi"), "foo::bar");
        assert_eq!(demangle("_ZNK3foo3bazEv"), "foo::baz");
        assert_eq!(demangle("_Znwm"), "operator new");
        assert_eq!(demangle("leak_a"), "leak_a");
        assert_eq!(demangle("memcpy@@GLIBC_2.14"), "memcpy");
        assert_eq!(demangle("_Zgarbage"), "_Zgarbage");
    }
}
