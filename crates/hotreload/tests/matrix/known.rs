//! Cells of the matrix known not to be clean, and why: a limit the README
//! documents (the behaviour's `limit`), or a bug that has a focused test
//! in `tests/hostile_found.rs`, or a limit that is not documented yet.
//! Everything else must be clean: a cell outside this list that is not
//! fails the matrix. A known cell that comes out clean is said, so the
//! list can shrink as the engine is fixed. None of it excuses the isolated
//! mode, whose target is every cell clean: plugin code in a worker process
//! can take down only the worker.

use super::cell::{Cell, Mode};
use crate::support::hostile::{Kind, Place};

/// Cells that match: every list that is empty matches all.
pub struct Known {
    pub behaviours: &'static [&'static str],
    pub places: &'static [Place],
    pub modes: &'static [Mode],
    /// Behaviours of this kind only, if set.
    pub kind: Option<Kind>,
    pub why: &'static str,
}

#[allow(dead_code)]
const fn all(behaviours: &'static [&'static str], why: &'static str) -> Known {
    Known {
        behaviours,
        places: &[],
        modes: &[],
        kind: None,
        why,
    }
}

#[allow(dead_code)]
const IN_THE_SERVER: &[Mode] = &[Mode::LoadProbe, Mode::NoProbe];

/// Empty while every cell outside the documented limits is clean: a cell
/// that is not fails the matrix, and goes here (with its focused test in
/// `tests/hostile_found.rs`) only while it is being fixed.
pub const KNOWN: &[Known] = &[];

impl Known {
    fn matches(&self, cell: &Cell) -> bool {
        (self.behaviours.is_empty() || self.behaviours.contains(&cell.behaviour.name))
            && (self.places.is_empty() || self.places.contains(&cell.place))
            && (self.modes.is_empty() || self.modes.contains(&cell.mode))
            && self.kind.is_none_or(|k| k == cell.behaviour.kind)
    }
}

/// Why `cell` may be other than clean, if it may.
pub fn why(cell: &Cell) -> Option<&'static str> {
    if cell.mode == Mode::Isolated {
        return None;
    }
    if let Some(limit) = cell.behaviour.limit {
        return Some(limit);
    }
    KNOWN.iter().find(|k| k.matches(cell)).map(|k| k.why)
}
