//! The hot-reload engine.
//!
//! A host owns a block of state and ticks it at a fixed rate through a plugin
//! library with a small C ABI ([`hotreload_abi`]). The engine watches the
//! plugin's sources, rebuilds it on change, checks the new library, and swaps
//! it in between two ticks without losing the state. The pipeline, one module
//! per stage:
//!
//! ```text
//! watch ─▶ build ─▶ shadow ─▶ precheck ─▶ load ─▶ check ─▶ tick (swap at a boundary)
//!   └── debounce, scope, fingerprint            reload drives the middle stages
//! ```
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

pub mod build;
pub mod check;
pub mod command;
pub mod config;
pub mod diagnostics;
pub mod engine;
pub mod event;
pub mod ext;
pub mod guard;
pub mod layout;
pub mod load;
pub mod migrate;
pub mod outcome;
pub mod paths;
pub mod persist;
pub mod plugin;
pub mod precheck;
pub mod probe;
pub mod reload;
pub mod schedule;
pub mod shadow;
pub mod snapshot;
pub mod state;
pub mod tick;
pub mod trial;
pub mod watch;

pub use command::{Command, StopReason};
pub use config::{Config, WatchMode};
pub use engine::{Commander, Engine, EngineHandle};
pub use event::Event;
pub use outcome::{Outcome, Rejection, StartError, exit_code};
pub use probe::run_if_requested as run_probe_if_requested;
