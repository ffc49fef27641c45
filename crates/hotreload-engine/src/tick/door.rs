//! Requests other threads make of the tick thread (`get`, `set`, `undo`,
//! `rollback`), carried out between two ticks, each answered exactly once.
//!
//! The tick thread may be inside plugin code when a request comes (a long
//! tick, a hang the watchdog has not yet cut). The asker does not wait for
//! it: it says at once that the thread is busy, or gives up after a bounded
//! wait. Either way the request must then never be carried out later, or a
//! client told "not done" would find the value set or the version rolled
//! back after all. So each request holds a ticket that exactly one side
//! claims: the tick thread to carry it out, or the asker to give it up.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

/// Why a request for the tick thread was not carried out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DoorError {
    /// Nothing to do it to now: no version running, or the tick thread is
    /// inside plugin code (nothing was done).
    Unavailable(String),
    /// The request itself is wrong: no such field, a value out of range,
    /// a version not kept.
    Refused(String),
    /// The request needs the server paused (`rewind`).
    NotPaused(String),
}

impl std::fmt::Display for DoorError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DoorError::Unavailable(why) | DoorError::Refused(why) | DoorError::NotPaused(why) => {
                f.write_str(why)
            }
        }
    }
}

const PENDING: u8 = 0;
const TAKEN: u8 = 1;
const ABANDONED: u8 = 2;

/// The tick thread's end of one request.
pub struct Asked<T> {
    reply: Sender<Result<T, DoorError>>,
    ticket: Arc<AtomicU8>,
}

/// The asker's end of one request.
pub struct Waiting<T> {
    answer: Receiver<Result<T, DoorError>>,
    ticket: Arc<AtomicU8>,
}

/// A new request: what goes to the tick thread, and what waits for it.
pub fn ask<T>() -> (Asked<T>, Waiting<T>) {
    let (reply, answer) = mpsc::channel();
    let ticket = Arc::new(AtomicU8::new(PENDING));
    (
        Asked {
            reply,
            ticket: Arc::clone(&ticket),
        },
        Waiting { answer, ticket },
    )
}

impl<T> Asked<T> {
    /// Claims the request for carrying out, unless the asker gave it up;
    /// what replies then.
    pub fn claim(self) -> Option<Claimed<T>> {
        self.ticket
            .compare_exchange(PENDING, TAKEN, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
            .then_some(Claimed { reply: self.reply })
    }

    /// Replies without carrying anything out (a refusal decided before the
    /// tick thread, or a tick thread that is gone).
    pub fn refuse(self, why: DoorError) {
        if let Some(claimed) = self.claim() {
            claimed.send(Err(why));
        }
    }
}

/// A request the tick thread has claimed: it must be answered.
pub struct Claimed<T> {
    reply: Sender<Result<T, DoorError>>,
}

impl<T> Claimed<T> {
    pub fn send(self, done: Result<T, DoorError>) {
        // An asker that hung up has nothing to be told.
        let _ = self.reply.send(done);
    }
}

/// How long the tick thread may stay inside plugin code before a request
/// is answered "busy" instead of waited for: above the ticks of heavy but
/// healthy plugins (a request waits those out and is carried out), far
/// below the watchdog's shortest timeout (1 s), and short enough for a
/// person at a prompt.
pub const BUSY_LIMIT: Duration = Duration::from_millis(200);

/// How often a waiting asker looks at whether the tick thread is busy.
const LOOK_EVERY: Duration = Duration::from_millis(5);

impl<T> Waiting<T> {
    /// Waits for the answer, at most `patience`; gives the request up as
    /// soon as `busy` says the tick thread has been inside plugin code for
    /// longer than [`BUSY_LIMIT`] (and how long), so that the caller hears
    /// within milliseconds. A request given up is never carried out.
    pub fn wait(
        self,
        patience: Duration,
        busy: impl Fn() -> Option<(Duration, Option<u64>)>,
    ) -> Result<T, DoorError> {
        let deadline = Instant::now() + patience;
        loop {
            match self.answer.recv_timeout(LOOK_EVERY) {
                Ok(done) => return done,
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(DoorError::Unavailable(
                        "expected the tick thread to answer, found it stopped".into(),
                    ));
                }
                Err(RecvTimeoutError::Timeout) => {}
            }
            let inside = busy().filter(|(for_, _)| *for_ > BUSY_LIMIT);
            if inside.is_none() && Instant::now() < deadline {
                continue;
            }
            if self
                .ticket
                .compare_exchange(PENDING, ABANDONED, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                return Err(match inside {
                    Some((for_, version)) => busy_error(for_, version),
                    None => DoorError::Unavailable(format!(
                        "expected the tick thread to answer within {} s, found it busy; nothing was done",
                        patience.as_secs_f64()
                    )),
                });
            }
            // Taken: the tick thread is carrying it out now (between two
            // ticks, no plugin code), so the answer is moments away.
            return self.answer.recv_timeout(patience).unwrap_or_else(|_| {
                Err(DoorError::Unavailable(
                    "expected the tick thread to finish a request it took, found no answer".into(),
                ))
            });
        }
    }
}

/// The answer to a request that comes while the tick thread has been inside
/// plugin code of `version` for `for_`.
pub fn busy_error(for_: Duration, version: Option<u64>) -> DoorError {
    DoorError::Unavailable(format!(
        "expected the tick thread between two ticks, found it inside {}plugin code for {} ms; nothing was done: ask again once the call returns (a hung call is cut off at --tick-timeout-ms)",
        version.map_or(String::new(), |v| format!("v{v}'s ")),
        for_.as_millis()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_given_up_is_never_carried_out() {
        let (asked, waiting) = ask::<u32>();
        let busy = || Some((Duration::from_millis(400), Some(3)));
        assert!(Duration::from_millis(400) > BUSY_LIMIT);
        let answer = waiting.wait(Duration::from_secs(5), busy);
        assert!(
            matches!(&answer, Err(DoorError::Unavailable(m)) if m.contains("inside v3's plugin code for 400 ms")),
            "{answer:?}"
        );
        assert!(asked.claim().is_none());
    }

    #[test]
    fn a_request_taken_is_answered() {
        let (asked, waiting) = ask::<u32>();
        let worker = std::thread::spawn(move || asked.claim().map(|c| c.send(Ok(7))).is_some());
        assert_eq!(waiting.wait(Duration::from_secs(5), || None), Ok(7));
        assert!(worker.join().expect("joined"));
    }

    #[test]
    fn patience_runs_out_and_the_request_is_dropped() {
        let (asked, waiting) = ask::<u32>();
        let answer = waiting.wait(Duration::from_millis(20), || None);
        assert!(matches!(answer, Err(DoorError::Unavailable(_))));
        assert!(asked.claim().is_none());
    }
}
