//! The matrix's tables: one per mode, a behaviour per row and a place per
//! column, and the counts.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use super::cell::{Cell, Mode, Verdict};
use crate::support::hostile::{BEHAVIOURS, PLACES};

/// The verdicts of a run, by cell.
#[derive(Default)]
pub struct Results {
    pub cells: BTreeMap<(Mode, usize, usize), (Cell, Verdict)>,
    /// Modes that were asked for but could not run, and why.
    pub skipped: Vec<(Mode, String)>,
    pub elapsed: Duration,
}

/// Counts over some cells.
#[derive(Default)]
pub struct Counts {
    pub cells: usize,
    pub deaths: usize,
    pub hangs: usize,
    pub lost: usize,
    pub damaged: usize,
    pub unclear: usize,
    pub recovered: usize,
    pub time: Duration,
}

impl Counts {
    fn add(&mut self, v: &Verdict) {
        self.cells += 1;
        self.deaths += usize::from(v.death.is_some());
        self.hangs += usize::from(v.hung);
        self.lost += usize::from(!v.lost.is_empty());
        self.damaged += usize::from(!v.damage.is_empty());
        self.unclear += usize::from(v.unclear);
        self.recovered += usize::from(v.recovered());
        self.time += v.elapsed;
    }
}

impl Results {
    pub fn modes(&self) -> Vec<Mode> {
        let mut modes: Vec<Mode> = self.cells.keys().map(|k| k.0).collect();
        modes.dedup();
        modes
    }

    pub fn counts(&self, mode: Mode, limits: Option<bool>) -> Counts {
        let mut c = Counts::default();
        for (cell, v) in self.cells.values().filter(|(c, _)| c.mode == mode) {
            if limits.is_none_or(|l| cell.behaviour.limit.is_some() == l) {
                c.add(v);
            }
        }
        c
    }

    /// The counts per mode, as a Markdown table.
    pub fn summary(&self) -> String {
        let mut out = String::from(
            "| mode | cells | host deaths (hung) | state lost | damaged | unclear | recovered | of them documented limits: deaths / lost / unclear | cell time |\n\
             | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n",
        );
        for mode in self.modes() {
            let all = self.counts(mode, None);
            let limits = self.counts(mode, Some(true));
            let _ = writeln!(
                out,
                "| {} | {} | **{}** ({}) | **{}** | {} | **{}** | {} | {} / {} / {} | {:.0} s |",
                mode.name(),
                all.cells,
                all.deaths,
                all.hangs,
                all.lost,
                all.damaged,
                all.unclear,
                all.recovered,
                limits.deaths,
                limits.lost,
                limits.unclear,
                all.time.as_secs_f64(),
            );
        }
        for (mode, why) in &self.skipped {
            let _ = writeln!(
                out,
                "| {} | not yet measured: {why} | | | | | | | |",
                mode.name()
            );
        }
        out
    }

    /// One mode's cells: a row per behaviour, a column per place.
    pub fn grid(&self, mode: Mode) -> String {
        let mut out = String::from("| behaviour |");
        for place in PLACES {
            let _ = write!(out, " {} |", place.short());
        }
        out.push_str("\n| --- |");
        out.push_str(&" :-: |".repeat(PLACES.len()));
        out.push('\n');
        for (b, behaviour) in BEHAVIOURS.iter().enumerate() {
            if !(0..PLACES.len()).any(|p| self.cells.contains_key(&(mode, b, p))) {
                continue;
            }
            let limit = if behaviour.limit.is_some() {
                " †"
            } else {
                ""
            };
            let _ = write!(out, "| `{}`{limit} |", behaviour.name);
            for p in 0..PLACES.len() {
                let symbol = self
                    .cells
                    .get(&(mode, b, p))
                    .map_or_else(String::new, |(_, v)| v.symbol());
                let _ = write!(out, " {symbol} |");
            }
            out.push('\n');
        }
        out
    }

    /// Every cell that is not clean, with what happened.
    pub fn notes(&self) -> String {
        let mut out = String::new();
        for (cell, v) in self.cells.values().filter(|(_, v)| !v.clean()) {
            let limit = cell
                .behaviour
                .limit
                .map(|l| format!(" [documented limit: {l}]"))
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "- {} {}: {}{limit}",
                v.symbol(),
                cell.name(),
                v.summary()
            );
        }
        out
    }

    /// The whole report, in Markdown.
    pub fn report(&self, title: &str) -> String {
        let mut out = format!(
            "## {title}\n\n{} cells in {:.0} s.\n\n",
            self.cells.len(),
            self.elapsed.as_secs_f64()
        );
        out.push_str(&self.summary());
        for mode in self.modes() {
            let _ = write!(out, "\n### {}\n\n{}", mode.name(), self.grid(mode));
        }
        let notes = self.notes();
        if !notes.is_empty() {
            let _ = write!(out, "\n### Cells that are not clean\n\n{notes}");
        }
        out
    }
}
