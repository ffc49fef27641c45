//! Outside reasons to stop or act: signals, and a stdout nobody reads any
//! more.
//!
//! SIGINT, SIGTERM and SIGHUP become a graceful stop: finish the tick in
//! progress, call the plugin's `shutdown`, save, report, exit. A second
//! Ctrl-C (SIGINT) while stopping exits at once, for a `shutdown` that does
//! not return, still saving the last completed tick's state; repeated
//! SIGTERMs (a supervisor and `timeout` both forwarding one) never skip
//! `shutdown`. SIGUSR1 rebuilds now, as if a source had changed; SIGUSR2
//! prints the state. Neither ever stops the server (their default action
//! would kill it without a save).
//!
//! The signals are blocked in every thread (the mask is set before any thread
//! starts, and threads inherit it) and taken synchronously by one thread with
//! `sigwait`, so no handler ever runs on top of plugin code. Child processes
//! start with an empty mask: the standard library resets it before `exec`.

use std::thread;

use hotreload_engine::{Commander, StopReason};
use nix::sys::signal::{SigSet, SigmaskHow, Signal, pthread_sigmask};

/// Every signal this thread takes: the stop signals and the two user ones.
fn handled_signals() -> SigSet {
    let mut set = SigSet::empty();
    for signal in [
        Signal::SIGINT,
        Signal::SIGTERM,
        Signal::SIGHUP,
        Signal::SIGUSR1,
        Signal::SIGUSR2,
    ] {
        set.add(signal);
    }
    set
}

/// Blocks the stop signals in the calling thread, and so in every thread it
/// starts afterwards. Call before any thread exists.
pub fn block() -> Result<(), String> {
    pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&handled_signals()), None)
        .map_err(|e| format!("cannot block SIGINT/SIGTERM/SIGHUP/SIGUSR1/SIGUSR2: {e}"))
}

/// Turns signals into commands from now on.
pub fn forward_to(
    commander: Commander,
    on_second_interrupt: impl Fn(Signal) + Send + 'static,
) -> Result<(), String> {
    thread::Builder::new()
        .name("hotreload-signals".into())
        .spawn(move || {
            let set = handled_signals();
            let mut stopping = false;
            while let Ok(signal) = set.wait() {
                if signal == Signal::SIGUSR1 {
                    commander.send(hotreload_engine::Command::Rebuild);
                } else if signal == Signal::SIGUSR2 {
                    commander.send(hotreload_engine::Command::ReportState);
                } else if !stopping {
                    stopping = true;
                    commander.send(hotreload_engine::Command::Stop(StopReason::Signal(
                        signal as i32,
                    )));
                } else if signal == Signal::SIGINT {
                    on_second_interrupt(signal);
                }
            }
        })
        .map(|_| ())
        .map_err(|e| format!("cannot start the signal thread: {e}"))
}

/// Stops the server once stdout is a pipe whose reader has gone
/// (`hotreload ... | head`), the way SIGPIPE stops other tools. Writes would
/// notice too, but the host may print nothing for a long time; `poll` on the
/// write end reports the error at once. On a terminal or a file it never
/// returns.
pub fn stop_when_stdout_closes(commander: Commander) -> Result<(), String> {
    thread::Builder::new()
        .name("hotreload-stdout".into())
        .spawn(move || {
            // The host's own copy of stdout: the one its lines go to,
            // whatever plugin code does to descriptor 1.
            let mut fd = libc::pollfd {
                fd: std::os::fd::AsRawFd::as_raw_fd(hotreload_engine::console::host_stdout()),
                events: 0,
                revents: 0,
            };
            loop {
                // SAFETY: one valid `pollfd`, for the duration of the call.
                let ready = unsafe { libc::poll(&mut fd, 1, -1) };
                if ready > 0 && fd.revents & (libc::POLLERR | libc::POLLHUP) != 0 {
                    commander.send(hotreload_engine::Command::Stop(StopReason::Requested));
                    return;
                }
                if ready < 0 && std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR)
                {
                    return;
                }
            }
        })
        .map(|_| ())
        .map_err(|e| format!("cannot start the stdout watcher: {e}"))
}
