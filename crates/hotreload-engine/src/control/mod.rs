//! The control plane of a running server, which clients drive over a local
//! socket: what the server is doing ([`status::StatusBoard`]), readable at
//! any moment without asking the threads that may be busy or stuck in plugin
//! code; the numbered event stream ([`hub::Hub`]); and the socket server
//! ([`server`]), which answers requests and hands commands to the engine.
//!
//! The protocol itself (messages, limits, the socket's place) is the
//! `hotreload-control` crate, which clients use without the engine.

mod commands;
pub mod hub;
pub mod server;
pub mod status;
