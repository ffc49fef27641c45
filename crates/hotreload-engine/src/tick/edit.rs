//! Reading and writing one value of the state between two ticks, on
//! command: `get hp`, `set enemies[2].hp 1`, `undo`. Every write is checked
//! against the running version's layout, said as an event with the old and
//! the new value, and can be undone.

use crate::event::Event;
use crate::layout::Scalar;
use crate::layout::edit::{Target, encode, resolve};

use super::{DoorError, TickLoop};

/// What `get`, `set` or `undo` did: the value's path, what it held before
/// and holds now (the same for `get`), after how many ticks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Edited {
    pub path: String,
    pub old: String,
    pub new: String,
    pub tick: u64,
}

/// A request from outside the tick thread, answered on `reply`.
pub enum Edit {
    Get { path: String },
    Set { path: String, value: String },
    Undo,
}

pub type EditReply = super::door::Asked<Edited>;

/// A write that can be taken back.
pub(super) struct Undo {
    version: u64,
    target: Target,
    before: Vec<u8>,
}

/// The most writes `undo` can take back, newest first.
const UNDO_DEPTH: usize = 64;

impl TickLoop {
    pub(super) fn edit(&mut self, edit: Edit, reply: EditReply) {
        // Given up by its asker (it was told nothing was done): not done.
        let Some(reply) = reply.claim() else { return };
        reply.send(match edit {
            Edit::Get { path } => self.get_value(&path),
            Edit::Set { path, value } => self.set_value(&path, &value),
            Edit::Undo => self.undo_value(),
        });
    }

    fn target(&self, path: &str) -> Result<Target, DoorError> {
        let (Some(plugin), Some(state)) = (&self.current, &self.state) else {
            return Err(DoorError::Unavailable(
                "expected a version running on a state, found none".into(),
            ));
        };
        let target = match path.strip_prefix('@') {
            Some(raw) => by_offset(raw).map_err(DoorError::Refused)?,
            None => {
                let Some(layout) = plugin.layout() else {
                    return Err(DoorError::Refused(format!(
                        "expected a known layout for v{} (a schema, or debug info from a -g build), found none: name the bytes instead, e.g. @0:i32",
                        plugin.version()
                    )));
                };
                resolve(layout, path).map_err(DoorError::Refused)?
            }
        };
        if target.offset + target.size() > state.size() {
            return Err(DoorError::Refused(format!(
                "expected {} to lie inside the {}-byte state, found it at bytes {}..{}",
                target.path,
                state.size(),
                target.offset,
                target.offset + target.size()
            )));
        }
        Ok(target)
    }

    fn read(&self, target: &Target) -> Vec<u8> {
        self.state.as_ref().map_or_else(Vec::new, |s| {
            s.bytes()[target.offset..target.offset + target.size()].to_vec()
        })
    }

    fn get_value(&self, path: &str) -> Result<Edited, DoorError> {
        let target = self.target(path)?;
        let now = target.format(&self.read(&target));
        Ok(Edited {
            path: target.path,
            old: now.clone(),
            new: now,
            tick: self.ticks,
        })
    }

    fn set_value(&mut self, path: &str, value: &str) -> Result<Edited, DoorError> {
        let target = self.target(path)?;
        let bytes = encode(&target, value).map_err(DoorError::Refused)?;
        let before = self.read(&target);
        let version = self.current.as_ref().map_or(0, |p| p.version());
        self.write(&target, &bytes);
        let done = Edited {
            path: target.path.clone(),
            old: target.format(&before),
            new: target.format(&bytes),
            tick: self.ticks,
        };
        if self.undo.len() == UNDO_DEPTH {
            self.undo.remove(0);
        }
        self.undo.push(Undo {
            version,
            target,
            before,
        });
        (self.events)(Event::FieldSet {
            path: done.path.clone(),
            old: done.old.clone(),
            new: done.new.clone(),
            tick: done.tick,
            undone: false,
        });
        Ok(done)
    }

    fn undo_value(&mut self) -> Result<Edited, DoorError> {
        let version = self.current.as_ref().map_or(0, |p| p.version());
        let Some(last) = self.undo.last() else {
            return Err(DoorError::Refused(
                "expected a set to undo, found none".into(),
            ));
        };
        if last.version != version {
            return Err(DoorError::Refused(format!(
                "expected v{} to run, under which {} was set, found v{version}: the state's layout may differ, so it is not undone",
                last.version, last.target.path
            )));
        }
        let Some(last) = self.undo.pop() else {
            return Err(DoorError::Refused(
                "expected a set to undo, found none".into(),
            ));
        };
        let now = self.read(&last.target);
        self.write(&last.target, &last.before);
        let done = Edited {
            path: last.target.path.clone(),
            old: last.target.format(&now),
            new: last.target.format(&last.before),
            tick: self.ticks,
        };
        (self.events)(Event::FieldSet {
            path: done.path.clone(),
            old: done.old.clone(),
            new: done.new.clone(),
            tick: done.tick,
            undone: true,
        });
        Ok(done)
    }

    fn write(&mut self, target: &Target, bytes: &[u8]) {
        if let Some(state) = &mut self.state {
            state.bytes_mut()[target.offset..target.offset + bytes.len()].copy_from_slice(bytes);
        }
    }
}

/// `12:i32`: a value named by its offset and type, for plugins without a
/// layout.
fn by_offset(raw: &str) -> Result<Target, String> {
    let (offset, kind) = raw
        .split_once(':')
        .ok_or_else(|| format!("expected @OFFSET:TYPE (e.g. @12:i32), found @{raw}"))?;
    let offset: usize = offset
        .trim()
        .parse()
        .map_err(|_| format!("expected a byte offset in @{raw}, found {offset:?}"))?;
    let scalar = match kind.trim() {
        "i8" => Scalar::Int {
            signed: true,
            bytes: 1,
        },
        "i16" => Scalar::Int {
            signed: true,
            bytes: 2,
        },
        "i32" => Scalar::Int {
            signed: true,
            bytes: 4,
        },
        "i64" => Scalar::Int {
            signed: true,
            bytes: 8,
        },
        "u8" => Scalar::Int {
            signed: false,
            bytes: 1,
        },
        "u16" => Scalar::Int {
            signed: false,
            bytes: 2,
        },
        "u32" => Scalar::Int {
            signed: false,
            bytes: 4,
        },
        "u64" => Scalar::Int {
            signed: false,
            bytes: 8,
        },
        "f32" => Scalar::Float { bytes: 4 },
        "f64" => Scalar::Float { bytes: 8 },
        "bool" => Scalar::Bool,
        other => {
            return Err(format!(
                "expected a type of i8, i16, i32, i64, u8, u16, u32, u64, f32, f64 or bool in @{raw}, found {other:?}"
            ));
        }
    };
    Ok(Target {
        path: format!("@{raw}"),
        offset,
        scalar,
        count: 1,
        shown: Default::default(),
    })
}
