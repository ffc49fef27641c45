//! What the outside world can ask of a running engine. Commands flow in on one
//! channel through an [`EngineHandle`](crate::EngineHandle); later front ends
//! (a control socket, a dashboard) send the same commands.

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// Finish the current tick, call `shutdown`, report, and exit.
    Stop(StopReason),
    /// Build and reload now, as if a source had changed.
    Rebuild,
    /// Report the state now (a [`crate::Event::State`] at the next tick
    /// boundary).
    ReportState,
    /// Hold ticking between two ticks ([`crate::Event::Paused`]).
    Pause,
    /// Tick again, deadlines restarted from now.
    Resume,
    /// While paused, run this many ticks, then hold again.
    Step(u64),
    /// Write the state file now.
    Save,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// A signal such as SIGINT or SIGTERM, by number.
    Signal(i32),
    /// Asked for by the embedding host.
    Requested,
}
