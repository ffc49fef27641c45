//! The middle of the pipeline: from a settled change to a version ready to
//! go live.
//!
//! [`reload`] is the state machine that owns every decision about builds;
//! [`build`] runs the user's command in the background (its end heard as
//! [`child_wait`] hears a probe's); [`trial`] runs a new
//! build's load-time code and a few ticks in a throwaway probe process
//! before the host maps it; [`replay`] runs recorded ticks again with a
//! chosen version in a throwaway worker.

pub mod build;
pub mod child_wait;
pub mod reload;
pub mod replay;
pub mod trial;
