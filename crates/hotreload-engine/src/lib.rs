//! The hot-reload engine.
//!
//! A host owns a block of state and ticks it at a fixed rate through a plugin
//! library with a small C ABI ([`hotreload_abi`]). The engine watches the
//! plugin's sources, rebuilds it on change, checks the new library, and swaps
//! it in between two ticks without losing the state. The pipeline:
//!
//! ```text
//! watch ─▶ build ─▶ shadow ─▶ precheck ─▶ trial ─▶ load ─▶ check ─▶ tick (swap at a boundary)
//! ```
//!
//! The modules group it by concern, every dependency pointing down this list:
//! - [`engine`] wires the stages onto their threads; [`config`], [`command`],
//!   [`event`] and [`outcome`] are what goes in and comes out.
//! - [`watch`]: noticing changes (what is in scope and the ignore rules,
//!   the model of which folders to watch, inotify or polling, debounce,
//!   fingerprints, the journal of what was touched).
//! - [`pipeline`]: the reload state machine, the build, the trial.
//! - [`plugin`]: one library from bytes to a checked version (shadow copy,
//!   precheck and the ELF validator behind it, the loader, ABI check,
//!   extended table, the record of a library built with the
//!   `hotreload-plugin` crate, the probe, and the unload every version
//!   goes through, embedded ones included).
//! - [`tick`]: the loop that owns the state and calls plugin code: swaps,
//!   recovery after faults, the schedule.
//! - [`state`] and [`layout`]: the host-owned block, snapshots, migration,
//!   the state file, and what the bytes mean.
//! - [`guard`]: the crash guard and watchdog every plugin call runs under.
//! - [`pattern`] and [`toolchain`], used across the others: wildcards for
//!   file names and field paths, and what a compiler puts in every library
//!   that the plugin's author never wrote.
//!
//! - [`embed`]: the engine for a host with its own function table, called
//!   from many threads at once: a cheap cloneable handle, reloads that
//!   never block a caller (epoch slots, membarrier, a reclaimer that closes
//!   a version once the last thread left it), hangs interrupted on any
//!   thread, and old versions kept mapped for threads still in them.
//!
//! [`Engine::start`] runs it all on background threads; [`Event`]s flow out on
//! a channel and [`Command`]s flow in through an [`EngineHandle`]. The
//! `hotreload` command-line tool is a thin layer over this crate.
//!
//! ```no_run
//! use hotreload_engine::{Config, Engine, Event, StopReason};
//!
//! # fn main() -> Result<(), hotreload_engine::StartError> {
//! let config = Config::new(vec!["logic.c".into()], "make".into(), "logic.so".into());
//! let engine = Engine::start(config, |event: Event| println!("{event:?}"))?;
//! // ... later, from any thread:
//! engine.stop(StopReason::Requested);
//! let exit_code = engine.join();
//! # let _ = exit_code;
//! # Ok(())
//! # }
//! ```

pub mod command;
pub mod config;
pub mod console;
pub mod control;
pub mod embed;
pub mod engine;
pub mod event;
pub mod guard;
pub mod layout;
pub mod outcome;
pub mod paths;
pub mod pattern;
pub mod pipeline;
pub mod plugin;
pub mod state;
pub mod tick;
pub mod toolchain;
pub mod watch;

pub use command::{Command, StopReason};
pub use config::{Config, WatchMode};
pub use engine::{Commander, Engine, EngineHandle};
pub use event::Event;
pub use outcome::{Outcome, Rejection, StartError, exit_code};
pub use plugin::probe::run_if_requested as run_probe_if_requested;
pub use state::forced::ForcedSave;
