//! `replay`: the ticks the history recorded, run again with another version
//! (by default the running one) in a throwaway worker process, each tick's
//! result compared with what the recorded run left, to say at which tick
//! and in which field the two first part, or that they never do.
//!
//! The recorded states are rebuilt from the snapshot's copy and the history
//! ([`crate::state::history::window`]); the worker runs on a block of
//! shared memory of its own, started from the window's first state, one
//! tick at a time, each passed the seed, its index and the input the
//! recorded run passed it (the same bytes, `dt` and context must give the
//! same result for a deterministic plugin). The live state, the tick thread and the running version are not
//! touched: this runs on the thread that asked.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::layout::edit::Target;
use crate::layout::{Field, Layout, Shown};
use crate::plugin::isolate::Worker;
use crate::plugin::{Plugin, TickContext};
use crate::state::State;
use crate::state::history::{Window, window};
use crate::state::pages::PAGE;
use crate::state::snapshot::SharedSnapshot;

/// What is asked: the window (default: all the history holds) and the
/// version to run it with.
#[derive(Clone, Debug)]
pub struct Request {
    pub from: Option<u64>,
    pub to: Option<u64>,
    pub version: u64,
    /// The version's library, as kept on disk.
    pub library: std::path::PathBuf,
    pub lib_name: String,
    pub dt: f64,
    /// The host context's seed, as the recorded run had it.
    pub seed: u64,
    /// The longest one tick may take in the worker.
    pub call_timeout: Duration,
}

/// What a replay found.
#[derive(Clone, Debug, PartialEq)]
pub struct Replayed {
    pub version: u64,
    pub from: u64,
    pub to: u64,
    /// Ticks run (fewer than the window when they part or the version
    /// faults).
    pub ran: u64,
    pub outcome: Outcome,
    pub took: Duration,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// Every tick left the same state as the recorded run.
    Same,
    /// The first tick after which the states differ, and where.
    Differs(Difference),
    /// The version faulted on a tick of the window.
    Faulted { tick: u64, cause: String },
}

#[derive(Clone, Debug, PartialEq)]
pub struct Difference {
    pub tick: u64,
    pub offset: usize,
    /// The field's path, when the layout is known (`enemies[3].pos.x`).
    pub path: Option<String>,
    pub recorded: String,
    pub replayed: String,
    /// Bytes that differ after that tick, in all.
    pub bytes: usize,
}

impl Replayed {
    pub fn fields(&self) -> Value {
        let outcome = match &self.outcome {
            Outcome::Same => json!({"kind": "same"}),
            Outcome::Differs(d) => json!({
                "kind": "differs",
                "tick": d.tick,
                "offset": d.offset,
                "path": d.path,
                "recorded": d.recorded,
                "replayed": d.replayed,
                "bytes": d.bytes,
            }),
            Outcome::Faulted { tick, cause } => {
                json!({"kind": "faulted", "tick": tick, "cause": cause})
            }
        };
        json!({
            "version": self.version,
            "from": self.from,
            "to": self.to,
            "ran": self.ran,
            "outcome": outcome,
            "took_ms": self.took.as_secs_f64() * 1e3,
        })
    }
}

/// How long a replay waits for the snapshot's lock (a take in progress).
const PATIENCE: Duration = Duration::from_secs(2);

/// A window read from the history: its states, and what they mean.
pub struct Recorded {
    pub window: Window,
    pub from: u64,
    pub to: u64,
    pub state_version: u32,
    pub layout: Option<Arc<Layout>>,
}

/// The window `from..to` (default: all the history holds) of what
/// `snapshot` recorded.
pub fn read_window(
    snapshot: &SharedSnapshot,
    from: Option<u64>,
    to: Option<u64>,
) -> Result<Recorded, String> {
    let span = snapshot
        .history_span()
        .ok_or("expected a history, found none (--history-ticks 0)")?;
    let (oldest, newest) = match (span.oldest, span.newest) {
        (Some(o), Some(n)) if o < n => (o, n),
        _ => return Err("expected recorded ticks, found none yet".into()),
    };
    let from = from.unwrap_or(oldest);
    let to = to.unwrap_or(newest);
    if from < oldest || to > newest || from >= to {
        return Err(format!(
            "expected a window within the recorded ticks {oldest}..{newest}, found {from}..{to}"
        ));
    }
    let (copy, entries) = snapshot
        .read_with_history(PATIENCE, Some(from))
        .ok_or("expected the state's snapshot, found it busy or not yet live")?;
    if entries.first().map(|e| e.tick) != Some(from) {
        return Err(format!(
            "expected the history to reach back to tick {from}, found it starting at {}",
            entries
                .first()
                .map_or_else(|| copy.tick.to_string(), |e| e.tick.to_string())
        ));
    }
    let mut window = window(&copy.bytes, copy.tick, &entries, PAGE);
    window.steps.retain(|s| s.tick < to);
    Ok(Recorded {
        window,
        from,
        to,
        state_version: copy.state_version,
        layout: copy.layout,
    })
}

/// Runs the replay `request` asks for against what `snapshot` recorded.
pub fn run(snapshot: &SharedSnapshot, request: &Request) -> Result<Replayed, String> {
    let recorded = read_window(snapshot, request.from, request.to)?;
    run_window(&recorded, request)
}

/// Runs the steps of `recorded` with the request's version and compares.
pub fn run_window(recorded: &Recorded, request: &Request) -> Result<Replayed, String> {
    let started = Instant::now();
    let window = &recorded.window;
    let (from, to) = (recorded.from, recorded.to);
    let size = window.start.len();
    let (worker, loaded) = Worker::spawn(
        &request.library,
        &request.lib_name,
        request.call_timeout,
        Some(discard()?),
    )
    .map_err(|r| format!("v{} cannot be loaded for the replay: {r}", request.version))?;
    let plugin = Plugin::isolated(
        worker,
        loaded,
        None,
        request.version,
        request.lib_name.clone(),
        0,
    );
    if plugin.state_size() != size {
        return Err(format!(
            "expected v{} to take the recorded state of {size} bytes, found it asking for {}",
            request.version,
            plugin.state_size()
        ));
    }
    let mut block = State::shared(size)?;
    block.bytes_mut().copy_from_slice(&window.start);
    let mut recorded_state = window.start.clone();
    let mut outcome = Outcome::Same;
    let mut ran = 0;
    for step in window.steps.iter().filter(|s| s.tick < to) {
        if !step.ticked {
            // Between two ticks (a hook, an edit): what the host did to the
            // recorded state, byte by byte, is done to the replayed one.
            for (p, content) in &step.after {
                let at = p * PAGE;
                let replayed = block.bytes_mut();
                for (i, &b) in content.iter().enumerate() {
                    if recorded_state[at + i] != b {
                        recorded_state[at + i] = b;
                        replayed[at + i] = b;
                    }
                }
            }
            continue;
        }
        let context = TickContext {
            seed: request.seed,
            tick: step.tick,
            input: step.input.as_deref().unwrap_or_default(),
        };
        // SAFETY: the block has the size this version was checked against,
        // and it runs in its own worker process.
        let result = unsafe { plugin.tick(&mut block, request.dt, &context) };
        if let Err(fault) = result {
            outcome = Outcome::Faulted {
                tick: step.tick,
                cause: fault.report(),
            };
            break;
        }
        ran += 1;
        for (p, content) in &step.after {
            let at = p * PAGE;
            recorded_state[at..at + content.len()].copy_from_slice(content);
        }
        if let Some(d) = first_difference(
            &recorded_state,
            block.bytes(),
            step.tick,
            recorded.layout.as_deref(),
        ) {
            outcome = Outcome::Differs(d);
            break;
        }
    }
    let _ = plugin.close();
    Ok(Replayed {
        version: request.version,
        from,
        to,
        ran,
        outcome,
        took: started.elapsed(),
    })
}

/// Writes the window `from..to` of what `snapshot` recorded to `path`, as
/// a recording (replaced whole: written aside, then renamed over).
pub fn record(
    snapshot: &SharedSnapshot,
    from: Option<u64>,
    to: Option<u64>,
    dt: f64,
    seed: u64,
    path: &Path,
) -> Result<(u64, u64, usize), String> {
    let recorded = read_window(snapshot, from, to)?;
    let bytes = crate::state::recording::encode(
        &recorded.window,
        &crate::state::recording::About {
            to: recorded.to,
            dt,
            seed,
            state_version: recorded.state_version,
            layout: recorded.layout.as_deref(),
        },
    )?;
    let aside = path.with_extension("recording-tmp");
    std::fs::write(&aside, &bytes)
        .and_then(|()| std::fs::rename(&aside, path))
        .map_err(|e| {
            let _ = std::fs::remove_file(&aside);
            format!("cannot write the recording {}: {e}", path.display())
        })?;
    Ok((recorded.from, recorded.to, bytes.len()))
}

/// Where plugin output from a replay goes: nowhere (the replay's own line
/// says what it found).
fn discard() -> Result<std::os::fd::OwnedFd, String> {
    std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/null")
        .map(Into::into)
        .map_err(|e| format!("cannot open /dev/null for the replay's output: {e}"))
}

/// The first byte where `replayed` differs from `recorded`, as the field
/// there with both values.
fn first_difference(
    recorded: &[u8],
    replayed: &[u8],
    tick: u64,
    layout: Option<&Layout>,
) -> Option<Difference> {
    let offset = recorded.iter().zip(replayed).position(|(a, b)| a != b)?;
    let bytes = recorded
        .iter()
        .zip(replayed)
        .filter(|(a, b)| a != b)
        .count();
    let target = layout.and_then(|l| target_at(l, offset));
    let (path, recorded_value, replayed_value) = match &target {
        Some(t) => (
            Some(t.path.clone()),
            t.format(&recorded[t.offset..t.offset + t.size()]),
            t.format(&replayed[t.offset..t.offset + t.size()]),
        ),
        None => (
            None,
            format!("{:#04x}", recorded[offset]),
            format!("{:#04x}", replayed[offset]),
        ),
    };
    Some(Difference {
        tick,
        offset,
        path,
        recorded: recorded_value,
        replayed: replayed_value,
        bytes,
    })
}

/// The element of the layout's field at `offset`, with its indices.
fn target_at(layout: &Layout, offset: usize) -> Option<Target> {
    let field: &Field = layout.field_at(offset)?;
    let width = field.scalar.size().max(1);
    if field.shown == Shown::Text {
        return Some(Target {
            path: field.name.clone(),
            offset: field.offset,
            scalar: field.scalar,
            count: field.count,
            shown: field.shown.clone(),
        });
    }
    let mut index = (offset - field.offset) / width;
    let mut indices = Vec::with_capacity(field.dims.len());
    for dim in field.dims.iter().rev() {
        indices.push(index % dim);
        index /= dim;
    }
    indices.reverse();
    let path = format!(
        "{}{}",
        field.name,
        indices.iter().map(|i| format!("[{i}]")).collect::<String>()
    );
    Some(Target {
        path,
        offset: field.offset + ((offset - field.offset) / width) * width,
        scalar: field.scalar,
        count: 1,
        shown: field.shown.clone(),
    })
}

/// The replay's one line.
pub fn describe(r: &Replayed) -> String {
    let head = format!(
        "v{} over ticks {}..{} ({} ran, {:.0} ms)",
        r.version,
        r.from,
        r.to,
        r.ran,
        r.took.as_secs_f64() * 1e3
    );
    match &r.outcome {
        Outcome::Same => format!("{head}: no difference from the recorded run"),
        Outcome::Differs(d) => format!(
            "{head}: first differs at tick {}: {}: {} → {} ({} {})",
            d.tick,
            d.path
                .clone()
                .unwrap_or_else(|| format!("byte {} (layout unknown)", d.offset)),
            d.recorded,
            d.replayed,
            d.bytes,
            if d.bytes == 1 {
                "byte differs"
            } else {
                "bytes differ"
            }
        ),
        Outcome::Faulted { tick, cause } => format!("{head}: faulted at tick {tick}: {cause}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::Scalar;

    #[test]
    fn a_difference_names_the_element_and_both_values() {
        let layout = Layout {
            size: 24,
            fields: vec![
                Field::new(
                    "score",
                    0,
                    Scalar::Int {
                        signed: true,
                        bytes: 4,
                    },
                    1,
                ),
                Field::array(
                    "grid",
                    8,
                    Scalar::Int {
                        signed: true,
                        bytes: 4,
                    },
                    vec![2, 2],
                ),
            ],
            source: crate::layout::Source::Schema,
        };
        let mut a = vec![0u8; 24];
        let mut b = a.clone();
        a[8 + 3 * 4] = 5;
        b[8 + 3 * 4] = 6;
        let d = first_difference(&a, &b, 41, Some(&layout)).expect("a difference");
        assert_eq!(d.tick, 41);
        assert_eq!(d.path.as_deref(), Some("grid[1][1]"));
        assert_eq!((d.recorded.as_str(), d.replayed.as_str()), ("5", "6"));
        assert!(first_difference(&a, &a, 0, Some(&layout)).is_none());
    }

    #[test]
    fn the_library_name_comes_out_of_the_kept_copy() {
        use crate::plugin::shadow::ShadowDir;
        assert_eq!(
            ShadowDir::kept_lib_name(Path::new("/x/kept-v12-logic.so")),
            "logic.so"
        );
        assert_eq!(
            ShadowDir::kept_lib_name(Path::new("/x/other.so")),
            "other.so"
        );
    }
}
