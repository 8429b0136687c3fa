//! The program `tally run` starts, and how `tally` looks after it until it ends.
//!
//! **A process group of its own.** The terminal sends Ctrl-C (SIGINT), Ctrl-\ (SIGQUIT) and
//! Ctrl-Z (SIGTSTP) to its whole foreground process group. A program in `tally`'s group would die
//! of a Ctrl-C at the moment `tally` heard of it, too early to be asked for a profile. So the
//! program runs in a group of its own (`setpgid`, through std's `process_group(0)`) and `tally`
//! stays the terminal's foreground: the terminal's signals reach `tally` only, and `tally` passes
//! them on to the program's group, as the terminal would have.
//!
//! **One loop, no handler.** From before the program starts until it ends, `tally` blocks
//! SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGTSTP, SIGCHLD (and SIGTTOU, so that it may take the
//! terminal back from the background) and takes them with `sigtimedwait` in the loop that also
//! polls the program with `waitpid`: no signal is lost between a check and a wait, and no code
//! runs in a signal handler. The program starts with the mask `tally` had before (put back
//! between `fork` and `exec`).
//!
//! - **An interrupt** (SIGINT, SIGTERM, SIGHUP, SIGQUIT): `tally` asks the program for a heap
//!   profile with the profiler's `prof_signal`, and waits up to [`DUMP_WAIT`] for it to appear
//!   (dumps are renamed into place complete). It asks only when `/proc/<pid>/status` shows that
//!   the program catches that signal: a real-time signal nobody handles would kill it. A second
//!   interrupt cuts the wait short. Then the interrupt goes to the program's group, and `tally`
//!   goes on waiting: a program that handles it and exits still writes its final profile.
//! - **Ctrl-Z** reaches `tally`, which passes SIGTSTP on; the program stops, and so does `tally`
//!   (below).
//! - **The program stops.** On SIGTTIN or SIGTTOU (it read the terminal, or changed its
//!   settings, from its background group) while `tally` is the terminal's foreground, `tally`
//!   hands the terminal to the program's group and continues it: from then on the terminal's
//!   signals go straight to the program, so a Ctrl-C is the program's alone and no profile is
//!   asked for. On any other stop, or when `tally` is itself in the background, `tally` stops its
//!   own group too (taking the terminal back first), so the shell sees the job stopped; when the
//!   shell continues it (`fg`, `bg`), `tally` continues the program (and gives the terminal back
//!   when it had given it). Without a controlling terminal there is no job control: a stopped
//!   program is just waited for.
//!
//! When the program has ended, `tally` takes the terminal back if it gave it, drops the signals
//! that came meanwhile (they were meant for the program) and unblocks the rest.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

/// How long `tally` waits for the profile it asked for before it passes an interrupt on.
pub const DUMP_WAIT: Duration = Duration::from_secs(3);

/// How often the program's state is polled when no signal comes.
const POLL: Duration = Duration::from_millis(200);

/// How often the dump directory is looked at while waiting for a profile.
const DUMP_POLL: Duration = Duration::from_millis(20);

/// The interrupts `tally` passes on, after asking for a profile.
const INTERRUPTS: [i32; 4] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT];

/// How the program ended.
#[derive(Debug, Clone, Copy)]
pub struct Ended {
    /// Its wait status.
    pub status: ExitStatus,
    /// The first interrupt `tally` passed on to it, if any.
    pub interrupted: Option<i32>,
}

/// What [`Supervisor::wait`] needs to ask for a profile.
pub struct DumpRequest<'a> {
    /// The profiler's `prof_signal`, if it is on.
    pub signal: Option<i32>,
    /// How many requested (`.m<n>.`) dumps the program has written so far.
    pub written: &'a dyn Fn() -> usize,
}

/// The program's state, as `waitpid` sees it.
enum State {
    Running,
    Stopped(i32),
    Ended(ExitStatus),
}

/// `tally`'s side of a run: its blocked signals and its terminal. Made before the program
/// starts; [`Supervisor::finish`] (or dropping it) puts things back.
pub struct Supervisor {
    /// The signals `tally` blocks and waits for.
    waited: libc::sigset_t,
    /// The signal mask before.
    previous: libc::sigset_t,
    /// The controlling terminal, if `tally` has one.
    terminal: Option<OwnedFd>,
    /// Whether `tally` gave the terminal to the program's group.
    gave_terminal: bool,
    finished: bool,
}

impl Supervisor {
    /// Blocks the signals `tally` will wait for, and opens the controlling terminal.
    pub fn new() -> io::Result<Supervisor> {
        // SAFETY: sigset_t is plain data; sigemptyset initializes it.
        let mut waited: libc::sigset_t = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        let mut previous: libc::sigset_t = unsafe { std::mem::zeroed() };
        // SAFETY: both sets are valid, initialized by sigemptyset before use; pthread_sigmask
        // changes only this thread's mask, and `tally run` has one thread.
        let r = unsafe {
            libc::sigemptyset(&mut waited);
            for signal in INTERRUPTS
                .into_iter()
                .chain([libc::SIGTSTP, libc::SIGCHLD, libc::SIGTTOU])
            {
                libc::sigaddset(&mut waited, signal);
            }
            libc::pthread_sigmask(libc::SIG_BLOCK, &waited, &mut previous)
        };
        if r != 0 {
            return Err(io::Error::from_raw_os_error(r));
        }
        // SAFETY: a plain open of a NUL-terminated path; the descriptor is owned below.
        let fd = unsafe {
            libc::open(
                c"/dev/tty".as_ptr(),
                libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
            )
        };
        // SAFETY: `fd` was just opened and nothing else owns it.
        let terminal = (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd) });
        Ok(Supervisor {
            waited,
            previous,
            terminal,
            gave_terminal: false,
            finished: false,
        })
    }

    /// Starts `command` in a process group of its own, with the signal mask `tally` had before.
    pub fn spawn(&self, command: &mut Command) -> io::Result<Child> {
        let previous = self.previous;
        // SAFETY: the closure runs in the child between fork and exec, where only
        // async-signal-safe calls are allowed: pthread_sigmask is one, and it allocates nothing.
        unsafe {
            command.pre_exec(move || {
                match libc::pthread_sigmask(libc::SIG_SETMASK, &previous, std::ptr::null_mut()) {
                    0 => Ok(()),
                    e => Err(io::Error::from_raw_os_error(e)),
                }
            });
        }
        command.process_group(0).spawn()
    }

    /// Waits for `child` to end, passing on interrupts after asking for a profile (module docs).
    pub fn wait(&mut self, child: &Child, request: &DumpRequest<'_>) -> io::Result<Ended> {
        let pid = child.id() as libc::pid_t;
        let mut interrupted = None;
        loop {
            match state(pid)? {
                State::Ended(status) => return Ok(Ended { status, interrupted }),
                State::Stopped(signal) => self.on_stop(pid, signal),
                State::Running => {}
            }
            match self.next_signal(POLL) {
                Some(signal) if INTERRUPTS.contains(&signal) => {
                    if let Some(status) = self.interrupt(pid, signal, request)? {
                        return Ok(Ended {
                            status,
                            interrupted: Some(signal),
                        });
                    }
                    interrupted.get_or_insert(signal);
                }
                Some(libc::SIGTSTP) => signal_group(pid, libc::SIGTSTP),
                _ => {}
            }
        }
    }

    /// Asks the program for a profile, waits for it, passes `signal` on. The program's status if
    /// it ended meanwhile.
    fn interrupt(
        &mut self,
        pid: libc::pid_t,
        signal: i32,
        request: &DumpRequest<'_>,
    ) -> io::Result<Option<ExitStatus>> {
        // A stop is reported once: one seen here must still lead to the program's SIGCONT.
        let mut stopped = false;
        if let Some(ask) = request.signal.filter(|&s| catches(pid, s)) {
            let before = (request.written)();
            // SAFETY: kill has no memory-safety preconditions; `pid` is our unreaped child, so
            // the number cannot have been reused.
            unsafe { libc::kill(pid, ask) };
            let deadline = Instant::now() + DUMP_WAIT;
            while (request.written)() <= before && Instant::now() < deadline {
                match state(pid)? {
                    State::Ended(status) => return Ok(Some(status)),
                    State::Stopped(_) => stopped = true,
                    State::Running => {}
                }
                if self
                    .next_signal(DUMP_POLL)
                    .is_some_and(|s| INTERRUPTS.contains(&s))
                {
                    break;
                }
            }
        }
        signal_group(pid, signal);
        match state(pid)? {
            State::Ended(status) => return Ok(Some(status)),
            State::Stopped(_) => stopped = true,
            State::Running => {}
        }
        if stopped {
            // A stopped program only acts on the signal once continued.
            signal_group(pid, libc::SIGCONT);
        }
        Ok(None)
    }

    /// The program stopped on `signal` (module docs).
    fn on_stop(&mut self, pid: libc::pid_t, signal: i32) {
        let Some(terminal) = self.terminal.as_ref().map(AsRawFd::as_raw_fd) else {
            return;
        };
        let job_stop = !matches!(signal, libc::SIGTTIN | libc::SIGTTOU);
        if job_stop || !self.in_foreground(terminal) {
            let had_terminal = self.gave_terminal;
            self.take_terminal_back();
            // SAFETY: kill(0, SIGSTOP) stops `tally`'s own process group, as the terminal's
            // Ctrl-Z would; it returns once the shell continues the group.
            unsafe { libc::kill(0, libc::SIGSTOP) };
            if had_terminal && self.in_foreground(terminal) {
                self.give_terminal(terminal, pid);
            }
        } else {
            self.give_terminal(terminal, pid);
        }
        signal_group(pid, libc::SIGCONT);
    }

    /// Whether `tally`'s group is the terminal's foreground group.
    fn in_foreground(&self, terminal: i32) -> bool {
        // SAFETY: tcgetpgrp and getpgrp only read; `terminal` is our open descriptor.
        unsafe { libc::tcgetpgrp(terminal) == libc::getpgrp() }
    }

    /// Makes the program's group (its id is `pid`) the terminal's foreground.
    fn give_terminal(&mut self, terminal: i32, pid: libc::pid_t) {
        // SAFETY: `terminal` is our open descriptor; SIGTTOU is blocked, so a background
        // `tally` may change the foreground group without being stopped.
        if unsafe { libc::tcsetpgrp(terminal, pid) } == 0 {
            self.gave_terminal = true;
        }
    }

    /// Makes `tally`'s group the terminal's foreground again, if it gave the terminal away.
    fn take_terminal_back(&mut self) {
        if let (true, Some(terminal)) = (self.gave_terminal, &self.terminal) {
            // SAFETY: as in give_terminal.
            unsafe { libc::tcsetpgrp(terminal.as_raw_fd(), libc::getpgrp()) };
            self.gave_terminal = false;
        }
    }

    /// The next of the waited signals within `timeout`, if any.
    fn next_signal(&self, timeout: Duration) -> Option<i32> {
        let timeout = libc::timespec {
            tv_sec: timeout.as_secs() as libc::time_t,
            tv_nsec: timeout.subsec_nanos() as libc::c_long,
        };
        // SAFETY: the set is initialized and blocked; a null siginfo is allowed.
        let signal = unsafe { libc::sigtimedwait(&self.waited, std::ptr::null_mut(), &timeout) };
        (signal > 0).then_some(signal)
    }

    /// Takes the terminal back, drops the waited signals that are pending and restores the mask.
    pub fn finish(&mut self) {
        if std::mem::replace(&mut self.finished, true) {
            return;
        }
        self.take_terminal_back();
        while self.next_signal(Duration::ZERO).is_some() {}
        // SAFETY: `previous` is the mask pthread_sigmask returned.
        unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &self.previous, std::ptr::null_mut()) };
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        self.finish();
    }
}

/// The program's state, without waiting.
fn state(pid: libc::pid_t) -> io::Result<State> {
    let mut status = 0;
    // SAFETY: `status` is a valid out-parameter; `pid` is our child.
    let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG | libc::WUNTRACED) };
    match r {
        0 => Ok(State::Running),
        r if r == pid => Ok(if libc::WIFSTOPPED(status) {
            State::Stopped(libc::WSTOPSIG(status))
        } else {
            State::Ended(ExitStatus::from_raw(status))
        }),
        _ => {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                Ok(State::Running)
            } else {
                Err(e)
            }
        }
    }
}

/// Sends `signal` to the program's process group (whose id is its pid).
fn signal_group(pid: libc::pid_t, signal: i32) {
    // SAFETY: kill has no memory-safety preconditions; the group exists while its leader, our
    // unreaped child, does.
    unsafe { libc::kill(-pid, signal) };
}

/// Whether process `pid` has a handler for `signal` (`SigCgt` in `/proc/<pid>/status`).
pub fn catches(pid: libc::pid_t, signal: i32) -> bool {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return false;
    };
    status
        .lines()
        .find_map(|line| line.strip_prefix("SigCgt:"))
        .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
        .is_some_and(|mask| (1..=64).contains(&signal) && mask & (1 << (signal - 1)) != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_which_signals_a_process_catches() {
        let me = std::process::id() as libc::pid_t;
        assert!(!catches(me, libc::SIGUSR2));
        extern "C" fn nothing(_: i32) {}
        // SAFETY: installs a handler that does nothing, then restores the default.
        unsafe {
            libc::signal(libc::SIGUSR2, nothing as extern "C" fn(i32) as libc::sighandler_t);
            assert!(catches(me, libc::SIGUSR2));
            libc::signal(libc::SIGUSR2, libc::SIG_DFL);
        }
        assert!(!catches(me, 0) && !catches(me, 65));
    }
}
