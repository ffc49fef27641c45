//! How a trial is handed to a probe process, and how a probe knows it was.
//!
//! A probe must be impossible to enter by accident: an earlier design read
//! its orders from an environment variable and its arguments, and a stray
//! `HOTRELOAD_PROBE=0` in a user's shell turned the server into a probe that
//! truncated the first path on its command line. Now nothing a user can
//! type makes one:
//! - the probe is the hidden subcommand [`SUBCOMMAND`] with no other
//!   arguments, and
//! - its orders come on descriptor [`REQUEST_FD`], which must be a memfd
//!   sealed against every change (only a process that created it can have
//!   one, and the host seals it before the probe starts) holding a request
//!   that starts with [`MAGIC`];
//! - the library is descriptor [`LIBRARY_FD`], the host's own private copy
//!   opened read-only, so the probe maps exactly the bytes (the very inode)
//!   that the host maps afterwards;
//! - progress goes out on descriptor [`REPORT_FD`], a pipe;
//! - the current state, if any, is descriptor [`STATE_FD`], a memfd sealed
//!   as the request is, which the probe maps rather than reads
//!   ([`crate::plugin::sealed`]).
//!
//! The probe opens, creates and writes no path at all.
//!
//! # Request format
//! Little-endian: [`MAGIC`] (8 bytes), format version `u32` (1), ticks
//! `u64`, dt (`f64` bits, `u64`), seed `u64`, host tick `u64`, flags `u32`
//! (bit 0: a state follows; bit 1: load only, run no plugin function but the
//! entry points), state type (`u32` length, `u32::MAX` for none, then UTF-8),
//! the `--reset-field` patterns (`u32` count, then each as `u32` length and
//! UTF-8), and if a state follows: its version `u32`, its layout (`u32`
//! length, `u32::MAX` for none, then the bytes
//! `crate::state::persist::encode_layout_only` writes) and its length
//! `u64`, which [`STATE_FD`] must hold exactly.

use std::fs::File;
use std::os::unix::fs::FileTypeExt;

use crate::layout::Layout;
use crate::plugin::child;
use crate::plugin::sealed::SealedMap;
use crate::state::persist;

/// The hidden subcommand that starts a probe.
pub const SUBCOMMAND: &str = "__hotreload-probe";
/// The descriptor numbers the probe finds its channels at.
pub const REQUEST_FD: i32 = 3;
pub const LIBRARY_FD: i32 = 4;
pub const REPORT_FD: i32 = 5;
pub const STATE_FD: i32 = 6;

pub const MAGIC: [u8; 8] = *b"HRPROBE\x01";
const FORMAT_VERSION: u32 = 2;

const HAS_STATE: u32 = 1;
const LOAD_ONLY: u32 = 2;

/// What the host asks of a probe.
#[derive(Clone, Debug, PartialEq)]
pub struct Request {
    pub ticks: u64,
    pub dt: f64,
    pub seed: u64,
    /// The host's ticks completed, for the host context.
    pub tick: u64,
    /// Only load the library and ask for its tables: for `--trial-ticks 0`,
    /// whose plugins may have side effects in their functions.
    pub load_only: bool,
    pub state_type: Option<String>,
    /// `--reset-field`: fields the migration may start at zero rather than
    /// refuse, as the host's does.
    pub reset_fields: Vec<String>,
    /// What the current state handed over on [`STATE_FD`] is, or `None`
    /// for a first version.
    pub state: Option<HandedState>,
}

/// What the state handed to a probe is: its bytes are on [`STATE_FD`].
#[derive(Clone, Debug, PartialEq)]
pub struct HandedState {
    pub state_version: u32,
    pub layout: Option<Layout>,
    pub len: u64,
}

impl Request {
    pub fn encode(&self) -> Result<Vec<u8>, String> {
        let mut out = Vec::with_capacity(128);
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        for n in [self.ticks, self.dt.to_bits(), self.seed, self.tick] {
            out.extend_from_slice(&n.to_le_bytes());
        }
        let flags = if self.state.is_some() { HAS_STATE } else { 0 }
            | if self.load_only { LOAD_ONLY } else { 0 };
        out.extend_from_slice(&flags.to_le_bytes());
        match &self.state_type {
            Some(name) => {
                let len = u32::try_from(name.len()).unwrap_or(u32::MAX - 1);
                out.extend_from_slice(&len.to_le_bytes());
                out.extend_from_slice(&name.as_bytes()[..len as usize]);
            }
            None => out.extend_from_slice(&u32::MAX.to_le_bytes()),
        }
        out.extend_from_slice(&(self.reset_fields.len() as u32).to_le_bytes());
        for pattern in &self.reset_fields {
            out.extend_from_slice(&(pattern.len() as u32).to_le_bytes());
            out.extend_from_slice(pattern.as_bytes());
        }
        if let Some(state) = &self.state {
            out.extend_from_slice(&state.state_version.to_le_bytes());
            match &state.layout {
                Some(layout) => {
                    let bytes = persist::encode_layout_only(layout)?;
                    out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
                    out.extend_from_slice(&bytes);
                }
                None => out.extend_from_slice(&u32::MAX.to_le_bytes()),
            }
            out.extend_from_slice(&state.len.to_le_bytes());
        }
        Ok(out)
    }

    pub fn decode(bytes: &[u8]) -> Result<Request, String> {
        let mut r = child::Reader::labelled(bytes, "the request");
        if r.take(8)? != MAGIC {
            return Err("expected a probe request, found other bytes".into());
        }
        let version = r.u32()?;
        if version != FORMAT_VERSION {
            return Err(format!(
                "expected probe request version {FORMAT_VERSION}, found {version}"
            ));
        }
        let (ticks, dt, seed, tick) = (r.u64()?, f64::from_bits(r.u64()?), r.u64()?, r.u64()?);
        let flags = r.u32()?;
        let state_type = match r.u32()? {
            u32::MAX => None,
            len => Some(
                String::from_utf8(r.take(len as usize)?.to_vec())
                    .map_err(|_| "the state type is not UTF-8".to_owned())?,
            ),
        };
        let patterns = r.u32()?;
        let mut reset_fields = Vec::new();
        for _ in 0..patterns {
            let len = r.u32()? as usize;
            reset_fields.push(
                String::from_utf8(r.take(len)?.to_vec())
                    .map_err(|_| "a --reset-field pattern is not UTF-8".to_owned())?,
            );
        }
        let state = if flags & HAS_STATE != 0 {
            let state_version = r.u32()?;
            let layout = match r.u32()? {
                u32::MAX => None,
                len => Some(
                    persist::decode_layout_only(r.take(len as usize)?)
                        .map_err(|why| format!("the state's layout: {why}"))?,
                ),
            };
            Some(HandedState {
                state_version,
                layout,
                len: r.u64()?,
            })
        } else {
            None
        };
        if r.position() != bytes.len() {
            return Err(format!(
                "expected the request to end at byte {}, found {} bytes",
                r.position(),
                bytes.len()
            ));
        }
        Ok(Request {
            ticks,
            dt,
            seed,
            tick,
            load_only: flags & LOAD_ONLY != 0,
            state_type,
            reset_fields,
            state,
        })
    }
}

/// A sealed memfd holding `request`, for the host to hand to a probe.
pub fn sealed_request(request: &Request) -> Result<File, String> {
    child::sealed_memfd(c"hotreload-trial-request", &request.encode()?)
}

/// The channels a probe was handed, once each has been checked to be what
/// only the host can hand over.
pub struct HandedOver {
    pub request: Request,
    pub library: File,
    pub report: File,
    /// The state's bytes, mapped, when the request says one follows.
    pub state: Option<SealedMap>,
}

/// Whether this process was started as a probe by a host: `Ok(None)` when
/// it was not asked to be one at all (no subcommand), `Err` when it was
/// asked but the channels are not the host's.
pub fn take_over() -> Result<Option<HandedOver>, String> {
    if !child::started_as(SUBCOMMAND)? {
        return Ok(None);
    }
    take_over_forked().map(Some)
}

/// The channels of a probe the trial helper forked ([`super::forker`]):
/// the same checks but the subcommand's, which a forked probe has not.
pub fn take_over_forked() -> Result<HandedOver, String> {
    let bytes = child::read_sealed_request(REQUEST_FD)?;
    let library = child::claim(LIBRARY_FD, "library", |t| t.is_file())?;
    let report = child::claim(REPORT_FD, "report pipe", |t| t.is_fifo())?;
    let request = Request::decode(&bytes)?;
    let state = match &request.state {
        Some(handed) => {
            let file = child::claim(STATE_FD, "state", |t| t.is_file())?;
            Some(SealedMap::open(&file, handed.len).map_err(|why| format!("the state: {why}"))?)
        }
        None => None,
    };
    Ok(HandedOver {
        request,
        library,
        report,
        state,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_round_trips_and_garbage_is_refused() {
        let request = Request {
            ticks: 3,
            dt: 0.01,
            seed: 7,
            tick: 40,
            load_only: false,
            state_type: Some("State".into()),
            reset_fields: vec!["hp".into(), "enemies[*].x".into()],
            state: Some(HandedState {
                state_version: 3,
                layout: None,
                len: 4096,
            }),
        };
        let bytes = request.encode().expect("encode");
        assert_eq!(Request::decode(&bytes), Ok(request.clone()));
        let bare = Request {
            state_type: None,
            reset_fields: Vec::new(),
            state: None,
            load_only: true,
            ..request
        };
        let bytes = bare.encode().expect("encode");
        assert_eq!(Request::decode(&bytes), Ok(bare.clone()));
        for cut in 0..bytes.len() {
            assert!(Request::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        assert!(Request::decode(b"logic.c source text").is_err());
    }
}
