//! Signals by name: `SIGSEGV` for 11, `SIGRTMIN+3` for a real-time signal, and back, as
//! `tally run` prints them (`killed by SIGSEGV (Segmentation fault)`) and reads them from a
//! `prof_signal` option (a number, or a name with or without `SIG`, any case).
//!
//! The names come from `tally-pal`, the table the allocator reads `prof_signal` with; `SIGRTMIN`
//! is the C library's (glibc keeps the first two real-time signals for itself, so it is 34
//! there), which is the one the profiled program sees.

/// The name of signal `signal`: `SIGSEGV`, `SIGRTMIN+3`, or `signal 99` for a number that names
/// none (the allocator's own table, `tally_pal::process::SignalName`, so both name signals alike).
pub fn name(signal: i32) -> String {
    tally_pal::process::SignalName(signal).to_string()
}

/// What the C library says signal `signal` is (`Segmentation fault`).
pub fn describe(signal: i32) -> String {
    // SAFETY: strsignal accepts any number and returns a NUL-terminated string that stays valid
    // until the next call; `tally` calls it from one thread only, and copies the text at once.
    let text = unsafe { libc::strsignal(signal) };
    if text.is_null() {
        return format!("signal {signal}");
    }
    // SAFETY: a non-null result of strsignal is a NUL-terminated string (above).
    unsafe { std::ffi::CStr::from_ptr(text) }
        .to_string_lossy()
        .into_owned()
}

/// `SIGSEGV (Segmentation fault)`.
pub fn name_and_description(signal: i32) -> String {
    format!("{} ({})", name(signal), describe(signal))
}

/// The signal `text` names: a number (`37`), or a name with or without `SIG` in any case
/// (`SIGUSR2`, `usr2`, `SIGRTMIN+3`, `RTMAX-1`). `None` for anything else, or a number out of
/// range (0 included: no signal).
pub fn parse(text: &str) -> Option<i32> {
    let text = text.trim();
    if let Ok(number) = text.parse::<i32>() {
        return (1..=libc::SIGRTMAX()).contains(&number).then_some(number);
    }
    tally_pal::process::signal_by_name(text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_numbers_round_trip() {
        for signal in 1..=libc::SIGRTMAX() {
            let name = name(signal);
            if !name.starts_with("signal ") {
                assert_eq!(parse(&name), Some(signal), "{name}");
            }
        }
        assert_eq!(name(libc::SIGSEGV), "SIGSEGV");
        assert_eq!(name(libc::SIGRTMIN() + 3), "SIGRTMIN+3");
        assert_eq!(
            name_and_description(libc::SIGSEGV),
            "SIGSEGV (Segmentation fault)"
        );
    }

    #[test]
    fn reads_what_prof_signal_may_hold() {
        assert_eq!(parse("12"), Some(libc::SIGUSR2));
        assert_eq!(parse("usr2"), Some(libc::SIGUSR2));
        assert_eq!(parse("SIGRTMIN+3"), Some(libc::SIGRTMIN() + 3));
        assert_eq!(parse("rtmax-1"), Some(libc::SIGRTMAX() - 1));
        for bad in ["0", "-1", "65", "SIGRTMAX+1", "SIGRTMIN-1", "NOPE", "", "RTMIN+x"] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }
}
