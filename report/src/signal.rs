//! Signals by name: `SIGSEGV` for 11, `SIGRTMIN+3` for a real-time signal, and back, as
//! `tally run` prints them (`killed by SIGSEGV (Segmentation fault)`) and reads them from a
//! `prof_signal` option (a number, or a name with or without `SIG`, any case).
//!
//! The numbers are Linux's, from `libc`; `SIGRTMIN` is the C library's (glibc keeps the first two
//! real-time signals for itself, so it is 34 there), which is the one the profiled program sees.

/// The standard signals, by name without `SIG`.
const NAMED: &[(&str, i32)] = &[
    ("HUP", libc::SIGHUP),
    ("INT", libc::SIGINT),
    ("QUIT", libc::SIGQUIT),
    ("ILL", libc::SIGILL),
    ("TRAP", libc::SIGTRAP),
    ("ABRT", libc::SIGABRT),
    ("BUS", libc::SIGBUS),
    ("FPE", libc::SIGFPE),
    ("KILL", libc::SIGKILL),
    ("USR1", libc::SIGUSR1),
    ("SEGV", libc::SIGSEGV),
    ("USR2", libc::SIGUSR2),
    ("PIPE", libc::SIGPIPE),
    ("ALRM", libc::SIGALRM),
    ("TERM", libc::SIGTERM),
    ("STKFLT", libc::SIGSTKFLT),
    ("CHLD", libc::SIGCHLD),
    ("CONT", libc::SIGCONT),
    ("STOP", libc::SIGSTOP),
    ("TSTP", libc::SIGTSTP),
    ("TTIN", libc::SIGTTIN),
    ("TTOU", libc::SIGTTOU),
    ("URG", libc::SIGURG),
    ("XCPU", libc::SIGXCPU),
    ("XFSZ", libc::SIGXFSZ),
    ("VTALRM", libc::SIGVTALRM),
    ("PROF", libc::SIGPROF),
    ("WINCH", libc::SIGWINCH),
    ("IO", libc::SIGIO),
    ("PWR", libc::SIGPWR),
    ("SYS", libc::SIGSYS),
];

/// The name of signal `signal`: `SIGSEGV`, `SIGRTMIN+3`, or `signal 99` for a number that names
/// none.
pub fn name(signal: i32) -> String {
    if let Some((name, _)) = NAMED.iter().find(|(_, n)| *n == signal) {
        return format!("SIG{name}");
    }
    let (min, max) = (libc::SIGRTMIN(), libc::SIGRTMAX());
    match signal {
        s if s == min => "SIGRTMIN".into(),
        s if s > min && s <= max => format!("SIGRTMIN+{}", s - min),
        s => format!("signal {s}"),
    }
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
    let valid = |s: i32| (1..=libc::SIGRTMAX()).contains(&s).then_some(s);
    if let Ok(number) = text.parse::<i32>() {
        return valid(number);
    }
    let upper = text.to_ascii_uppercase();
    let bare = upper.strip_prefix("SIG").unwrap_or(&upper);
    if let Some((_, n)) = NAMED.iter().find(|(name, _)| *name == bare) {
        return Some(*n);
    }
    let real_time = |rest: &str, base: i32| -> Option<i32> {
        let signal = if rest.is_empty() {
            base
        } else if let Some(n) = rest.strip_prefix('+') {
            base.checked_add(n.parse::<i32>().ok()?)?
        } else {
            base.checked_sub(rest.strip_prefix('-')?.parse::<i32>().ok()?)?
        };
        (libc::SIGRTMIN()..=libc::SIGRTMAX())
            .contains(&signal)
            .then_some(signal)
    };
    if let Some(rest) = bare.strip_prefix("RTMIN") {
        return real_time(rest, libc::SIGRTMIN());
    }
    if let Some(rest) = bare.strip_prefix("RTMAX") {
        return real_time(rest, libc::SIGRTMAX());
    }
    None
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
