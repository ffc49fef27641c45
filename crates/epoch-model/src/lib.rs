//! The engine's publish/retire protocol, the very source file, compiled on
//! its own so that its model test (`epoch::model`, with `loom`) builds in
//! seconds rather than with the whole engine:
//!
//! ```sh
//! RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=3 \
//!     cargo test -p hotreload-epoch-model --release
//! ```
//!
//! Without `--cfg loom` it is the protocol over the standard atomics and
//! has no tests of its own (the engine's `tests/embed.rs` runs it for real).

#[path = "../../hotreload-engine/src/embed/epoch.rs"]
pub mod epoch;
