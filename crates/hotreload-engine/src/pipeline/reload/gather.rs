//! Gathering the watcher's batches that queued while the reload thread was
//! busy into one, before any is handled.

use std::collections::VecDeque;
use std::sync::mpsc::Receiver;

use crate::tick::TickOutput;
use crate::watch::{Batch, WatchOutput};

use super::Inbox;

/// `first` with the batches queued right behind it: saves that came while
/// this thread was busy (a large state's migration) are one change. Handled
/// one by one, every batch after the first would find its files as the
/// first left them (read when it was handled) and say "unchanged". The
/// build-ahead notices between them are for batches absorbed here; one
/// after the last batch waits in `held`, with what a swap let go of
/// meanwhile and the first message of another kind.
pub(super) fn batches(
    mut first: Batch,
    inbox: &Receiver<Inbox>,
    held: &mut VecDeque<Inbox>,
) -> Batch {
    let mut ahead = None;
    while let Ok(next) = inbox.try_recv() {
        match next {
            Inbox::Watch(WatchOutput::Batch(more)) => {
                ahead = None;
                first.absorb(more);
            }
            notice @ Inbox::Watch(WatchOutput::Ahead(_)) => ahead = Some(notice),
            // What a swap lets go of comes between the batches of saves
            // made while it was worked out; it waits, the gathering goes on.
            memory @ Inbox::Tick(TickOutput::Discard(_) | TickOutput::Retired(_)) => {
                held.push_back(memory);
            }
            other => {
                held.extend(ahead.take());
                held.push_back(other);
                return first;
            }
        }
    }
    held.extend(ahead);
    first
}
