//! A recorded window of ticks as a file (`hotreload ctl record FROM TO
//! FILE`), for `hotreload --replay FILE --lib LIB` to run again with any
//! build, on any machine, and say where it first differs.
//!
//! # Format (version 2)
//!
//! Little-endian, fixed-width integers:
//!
//! | Size | Content |
//! | --- | --- |
//! | 8 | magic bytes `\x89HRRECRD` |
//! | 4 | format version, `u32` (2) |
//! | 8 | length `L` of the state file that follows, `u64` |
//! | `L` | the window's first state as a state file ([`super::persist`]: its state version and layout, CRC included) |
//! | 8 | the tick it was taken before, `u64` |
//! | 8 | the tick the window ends at, `u64` |
//! | 8 | `dt` in seconds, as `f64` bits, `u64` |
//! | 8 | the run's seed (the host context's), `u64` |
//! | 8 | steps, `u64`; then per step: its tick (`u64`), whether a tick ran in it (`u8`: 0 or 1; 0 for what the host did between two ticks), the input its tick was passed (its length, `u32`, at most 2048, 0 for none; then its bytes), the pages it changed (`u32`), and per page its index (`u64`), its length (`u32`, at most 4096) and its bytes as they were after the step |
//! | 4 | CRC-32 (IEEE 802.3) of every byte before it |
//!
//! Version 1, written before ticks had input, lacks the seed (read as 0)
//! and the per-step input (read as none); it is still read.
//!
//! Every length is checked against the bytes left before anything is
//! allocated, so a damaged file is refused with a reason, never a panic or
//! an allocation it does not hold.

use std::sync::Arc;

use crate::layout::Layout;
use crate::state::history::{Page, Step, Window};
use crate::state::pages::PAGE;
use crate::state::persist::{self, SavedRef};

pub const MAGIC: [u8; 8] = *b"\x89HRRECRD";
const FORMAT_VERSION: u32 = 2;
/// The version before the seed and the ticks' input were recorded.
const FORMAT_WITHOUT_INPUT: u32 = 1;

/// A recording read back.
pub struct Recording {
    pub window: Window,
    pub to: u64,
    pub dt: f64,
    /// The seed of the run it was recorded from (0 for version 1).
    pub seed: u64,
    pub state_version: u32,
    pub layout: Option<Layout>,
}

/// What a recording is made of besides the window.
pub struct About<'a> {
    pub to: u64,
    pub dt: f64,
    pub seed: u64,
    pub state_version: u32,
    pub layout: Option<&'a Layout>,
}

/// The file's bytes for `window` (steps before `to` only).
pub fn encode(window: &Window, about: &About<'_>) -> Result<Vec<u8>, String> {
    let About {
        to,
        dt,
        seed,
        state_version,
        layout,
    } = *about;
    let state = persist::encode(&SavedRef {
        state: &window.start,
        state_version,
        layout,
    })
    .map_err(|e| format!("cannot encode the window's first state: {e}"))?;
    let mut out = Vec::with_capacity(state.len() + 64);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&(state.len() as u64).to_le_bytes());
    out.extend_from_slice(&state);
    for n in [window.start_tick, to, dt.to_bits(), seed] {
        out.extend_from_slice(&n.to_le_bytes());
    }
    let steps: Vec<&Step> = window.steps.iter().filter(|s| s.tick < to).collect();
    out.extend_from_slice(&(steps.len() as u64).to_le_bytes());
    for step in steps {
        out.extend_from_slice(&step.tick.to_le_bytes());
        out.push(u8::from(step.ticked));
        let input = step.input.as_deref().unwrap_or_default();
        out.extend_from_slice(&(input.len() as u32).to_le_bytes());
        out.extend_from_slice(input);
        put_pages(&mut out, &step.after);
    }
    let crc = persist::checksum(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    Ok(out)
}

/// A step's pages: their count, then each one's index, length and bytes.
fn put_pages(out: &mut Vec<u8>, after: &[(usize, Page)]) {
    out.extend_from_slice(&(after.len() as u32).to_le_bytes());
    for (p, content) in after {
        out.extend_from_slice(&(*p as u64).to_le_bytes());
        out.extend_from_slice(&(content.len() as u32).to_le_bytes());
        out.extend_from_slice(content);
    }
}

/// Reads a recording, refusing anything that is not one, saying why.
pub fn decode(bytes: &[u8]) -> Result<Recording, String> {
    if bytes.len() < MAGIC.len() || bytes[..MAGIC.len()] != MAGIC {
        return Err(
            "expected a hotreload recording (made by `hotreload ctl record`), found other bytes"
                .into(),
        );
    }
    if bytes.len() < 16 {
        return Err(format!(
            "expected a recording of at least 16 bytes, found {}",
            bytes.len()
        ));
    }
    let (body, crc) = bytes.split_at(bytes.len() - 4);
    let stored = u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]);
    let computed = persist::checksum(body);
    if stored != computed {
        return Err(format!(
            "expected checksum {computed:#010x} over the recording, found {stored:#010x}: the file is damaged or cut short"
        ));
    }
    let mut r = crate::plugin::child::Reader::labelled(body, "the recording");
    r.take(MAGIC.len())?;
    let version = r.u32()?;
    if version != FORMAT_VERSION && version != FORMAT_WITHOUT_INPUT {
        return Err(format!(
            "expected recording format {FORMAT_WITHOUT_INPUT} or {FORMAT_VERSION}, found {version} (made by another version of hotreload)"
        ));
    }
    let with_input = version == FORMAT_VERSION;
    let state_len = usize::try_from(r.u64()?).map_err(|_| "state length too large".to_owned())?;
    let saved = persist::decode(r.take(state_len)?)
        .map_err(|e| format!("the window's first state: {e}"))?;
    let start_tick = r.u64()?;
    let to = r.u64()?;
    let dt = f64::from_bits(r.u64()?);
    if !(dt.is_finite() && dt > 0.0) {
        return Err(format!("expected a positive dt, found {dt}"));
    }
    let seed = if with_input { r.u64()? } else { 0 };
    let count = r.u64()?;
    let size = saved.state.len();
    let mut steps = Vec::new();
    for _ in 0..count {
        let tick = r.u64()?;
        let ticked = match r.u8()? {
            0 => false,
            1 => true,
            other => return Err(format!("expected 0 or 1 for a step's kind, found {other}")),
        };
        let input = if with_input {
            let len = r.u32()? as usize;
            if len > hotreload_abi::MAX_INPUT {
                return Err(format!(
                    "expected a tick's input of at most {} bytes, found {len} at tick {tick}",
                    hotreload_abi::MAX_INPUT
                ));
            }
            Some(r.take(len)?).filter(|i| !i.is_empty()).map(Arc::from)
        } else {
            None
        };
        let pages = r.u32()?;
        let mut after = Vec::new();
        for _ in 0..pages {
            let p = usize::try_from(r.u64()?).map_err(|_| "page index too large".to_owned())?;
            let len = r.u32()? as usize;
            let fits = p
                .checked_mul(PAGE)
                .and_then(|at| at.checked_add(len))
                .is_some_and(|end| end <= size);
            if len > PAGE || !fits {
                return Err(format!(
                    "expected pages within the state of {size} bytes, found page {p} of {len} bytes"
                ));
            }
            after.push((p, Arc::from(r.take(len)?)));
        }
        steps.push(Step {
            tick,
            ticked,
            after,
            input,
        });
    }
    if r.position() != body.len() {
        return Err(format!(
            "expected the recording to end at byte {}, found {} bytes",
            r.position(),
            body.len()
        ));
    }
    Ok(Recording {
        window: Window {
            start_tick,
            start: saved.state,
            steps,
        },
        to,
        dt,
        seed,
        state_version: saved.state_version,
        layout: saved.layout,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Window {
        Window {
            start_tick: 7,
            start: vec![1; 5000],
            steps: vec![
                Step {
                    tick: 7,
                    ticked: true,
                    after: vec![(1, Arc::from(&[9u8; 904][..]))],
                    input: Some(Arc::from(&b"jump"[..])),
                },
                Step {
                    tick: 8,
                    ticked: false,
                    after: vec![(0, Arc::from(&[3u8; 4096][..]))],
                    input: None,
                },
            ],
        }
    }

    fn about() -> About<'static> {
        About {
            to: 9,
            dt: 0.01,
            seed: 42,
            state_version: 3,
            layout: None,
        }
    }

    /// A recording as version 1 wrote it: no seed, no input.
    fn version_1(window: &Window, to: u64, dt: f64) -> Vec<u8> {
        let state = persist::encode(&SavedRef {
            state: &window.start,
            state_version: 3,
            layout: None,
        })
        .expect("state");
        let mut out = MAGIC.to_vec();
        out.extend_from_slice(&1u32.to_le_bytes());
        out.extend_from_slice(&(state.len() as u64).to_le_bytes());
        out.extend_from_slice(&state);
        for n in [
            window.start_tick,
            to,
            dt.to_bits(),
            window.steps.len() as u64,
        ] {
            out.extend_from_slice(&n.to_le_bytes());
        }
        for step in &window.steps {
            out.extend_from_slice(&step.tick.to_le_bytes());
            out.push(u8::from(step.ticked));
            put_pages(&mut out, &step.after);
        }
        let crc = persist::checksum(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    #[test]
    fn a_version_1_recording_is_still_read_without_seed_or_input() {
        let back = decode(&version_1(&sample(), 9, 0.01)).expect("version 1");
        assert_eq!((back.seed, back.to, back.state_version), (0, 9, 3));
        assert_eq!(back.window.steps.len(), 2);
        assert!(back.window.steps.iter().all(|s| s.input.is_none()));
        assert_eq!(&*back.window.steps[1].after[0].1, &[3u8; 4096][..]);
    }

    #[test]
    fn an_input_over_the_bound_is_refused() {
        let mut window = sample();
        window.steps[0].input = Some(Arc::from(&[1u8; hotreload_abi::MAX_INPUT + 1][..]));
        let bytes = encode(&window, &about()).expect("encode");
        let why = decode(&bytes).err().expect("refused");
        assert!(why.contains("at most 2048 bytes, found 2049"), "{why}");
    }

    #[test]
    fn a_recording_round_trips_and_every_cut_or_flip_is_refused() {
        let bytes = encode(&sample(), &about()).expect("encode");
        let back = decode(&bytes).expect("decode");
        assert_eq!(back.window.start, vec![1; 5000]);
        assert_eq!(
            (
                back.window.start_tick,
                back.to,
                back.dt,
                back.seed,
                back.state_version
            ),
            (7, 9, 0.01, 42, 3)
        );
        assert_eq!(back.window.steps.len(), 2);
        assert!(!back.window.steps[1].ticked);
        assert_eq!(back.window.steps[0].input.as_deref(), Some(&b"jump"[..]));
        assert!(back.window.steps[1].input.is_none());
        assert_eq!(&*back.window.steps[0].after[0].1, &[9u8; 904][..]);
        for cut in (0..bytes.len()).step_by(97) {
            assert!(decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        for at in (0..bytes.len()).step_by(131) {
            let mut flipped = bytes.clone();
            flipped[at] ^= 0x40;
            assert!(decode(&flipped).is_err(), "flip at {at}");
        }
        assert!(decode(b"not a recording at all").is_err());
    }

    /// Hostile recordings that pass the checksum (it is recomputed after
    /// each change): every field mangled, lengths set to absurd values. Each
    /// is read back or refused with a reason; none panics or allocates
    /// what the file does not hold.
    #[test]
    fn mangled_recordings_with_a_valid_checksum_are_refused_or_read_never_a_panic() {
        let good = encode(&sample(), &about()).expect("encode");
        let mut rng = 0x9e3779b97f4a7c15u64;
        let mut next = || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let (mut refused, mut read) = (0, 0);
        for case in 0..5_000 {
            let mut bytes = good.clone();
            let body = bytes.len() - 4;
            match case % 3 {
                0 => {
                    let at = next() as usize % body;
                    bytes[at] = next() as u8;
                }
                1 => {
                    // A length or count field: 4 or 8 bytes of 0xff or random.
                    let at = next() as usize % body.saturating_sub(8);
                    let fill = if next() % 2 == 0 { 0xff } else { next() as u8 };
                    for b in &mut bytes[at..at + 8] {
                        *b = fill;
                    }
                }
                _ => {
                    let cut = 12 + next() as usize % (body - 12);
                    bytes.truncate(cut);
                    bytes.extend_from_slice(&[0; 4]);
                }
            }
            let end = bytes.len() - 4;
            let crc = persist::checksum(&bytes[..end]);
            bytes[end..].copy_from_slice(&crc.to_le_bytes());
            match decode(&bytes) {
                Ok(_) => read += 1,
                Err(why) => {
                    assert!(!why.is_empty());
                    refused += 1;
                }
            }
        }
        assert!(refused > 1_000, "refused {refused}, read {read}");
    }
}
