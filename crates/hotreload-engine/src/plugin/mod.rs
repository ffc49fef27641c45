//! A plugin library, from bytes on disk to a checked, callable version.
//!
//! The stages a build goes through, each in its own module: [`shadow`]
//! (a private copy, never the build output itself), [`precheck`] (the ELF
//! bytes, before any code runs, validated by [`elf`] as the loader will
//! read them), [`load`] (the loader, through the thin [`dl`] layer),
//! [`check`] (the seed ABI's table) and [`ext`] (the optional extended
//! table). A version
//! that passed them all is a [`Plugin`]. [`probe`] is the child side of a
//! trial, which runs the same stages in a throwaway process, and [`child`]
//! and [`sealed`] what the host hands such a process; [`diagnostics`] names
//! the habits that break hot reloading. [`unload`] is the way out, the same
//! for the tick loop's versions, an isolated worker's library and an
//! embedded plugin's: threads still in its code, destructors, timers, then
//! `dlclose`.

pub mod check;
pub mod child;
pub mod diagnostics;
pub mod dl;
pub mod elf;
pub mod exercise;
pub mod ext;
pub mod isolate;
pub mod load;
pub mod precheck;
pub mod probe;
pub mod record;
pub mod sealed;
pub mod shadow;
pub mod unload;
mod version;

pub use version::{Hook, Knowledge, Plugin, TickContext};
