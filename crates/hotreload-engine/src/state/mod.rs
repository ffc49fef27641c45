//! The state the host owns on the plugin's behalf, and everything that keeps
//! it: the [`block`] itself, the [`snapshot`] a fault restores (of the
//! [`pages`] a tick wrote, for a large state) and its [`history`], the
//! [`migrate`] plan that carries it across layout changes, and the
//! [`persist`]ed state file that carries it across restarts, which one
//! server at a time [`claim`]s; a [`forced`] exit still saves it.

pub mod block;
pub mod claim;
pub mod forced;
pub mod history;
pub mod migrate;
pub mod pages;
pub mod persist;
pub mod recording;
pub mod release;
pub mod shared_pages;
pub mod snapshot;

pub use block::State;
