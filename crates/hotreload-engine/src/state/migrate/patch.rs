//! Applying a plan again to a few pages of the old state.
//!
//! A large state's migration is worked out on the reload thread, from a
//! copy of the state as of some tick, so that the tick thread never does
//! work that grows with the state's size. By the swap the running version
//! has written more: the pages it wrote since are applied again, and only
//! those ([`Plan::runs_reading`], [`Plan::apply_runs`]). The result is the
//! block a full [`Plan::apply`] of the state at the swap would make.
//!
//! The old state's pages are indexed once, with the plan ([`PageIndex`]):
//! for each page, the copies that read from it, so that finding what a page
//! feeds costs the copies on it, not a walk of every field.

use super::{Applied, Change, Copy, Plan, Unfit, convert};
use crate::state::pages::PAGE;

/// For each page of the old state, the plan's copies that read from it.
pub struct PageIndex {
    /// Where each page's list begins in `copies` (one more than pages).
    starts: Vec<u32>,
    copies: Vec<u32>,
}

/// Elements `first..end` (in the old field's memory order) of one copy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Run {
    copy: u32,
    first: usize,
    end: usize,
}

impl Plan {
    /// The index of which copies read each page of the old state.
    pub fn page_index(&self) -> PageIndex {
        let pages = self.old_size.div_ceil(PAGE);
        let mut counts = vec![0u32; pages + 1];
        let spans: Vec<Option<(usize, usize)>> = self.copies.iter().map(Copy::src_pages).collect();
        for (first, last) in spans.iter().flatten() {
            for count in &mut counts[*first..=(*last).min(pages.saturating_sub(1))] {
                *count += 1;
            }
        }
        let mut starts = Vec::with_capacity(pages + 1);
        let mut total = 0u32;
        for count in &counts[..pages] {
            starts.push(total);
            total += count;
        }
        starts.push(total);
        let mut fill = starts.clone();
        let mut copies = vec![0u32; total as usize];
        for (i, span) in spans.iter().enumerate() {
            if let Some((first, last)) = *span {
                for p in first..=last.min(pages.saturating_sub(1)) {
                    copies[fill[p] as usize] = i as u32;
                    fill[p] += 1;
                }
            }
        }
        PageIndex { starts, copies }
    }

    /// The runs of elements that read from `pages` (old-state pages, in any
    /// order, repeats allowed), one per copy and stretch of neighbouring
    /// pages; and the whole of each field in `reset` (zeroed by the apply
    /// before, as `--reset-field` allowed, for a value that may since have
    /// changed).
    pub fn runs_reading(&self, index: &PageIndex, pages: &[usize], reset: &[Change]) -> Vec<Run> {
        let whole: Vec<u32> = (0..self.copies.len() as u32)
            .filter(|&i| {
                let field = &self.copies[i as usize].field;
                reset.iter().any(|r| &r.field == field)
            })
            .collect();
        let mut runs: Vec<Run> = whole
            .iter()
            .map(|&copy| Run {
                copy,
                first: 0,
                end: self.copies[copy as usize].old_count,
            })
            .collect();
        let mut last_of: std::collections::HashMap<u32, usize> = std::collections::HashMap::new();
        for &p in pages {
            let Some(range) = index
                .starts
                .get(p)
                .zip(index.starts.get(p + 1))
                .map(|(a, b)| *a as usize..*b as usize)
            else {
                continue;
            };
            for &i in &index.copies[range] {
                if whole.contains(&i) {
                    continue;
                }
                let Some((first, end)) = self.copies[i as usize].elements_on(p) else {
                    continue;
                };
                match last_of.get(&i).map(|&r| &mut runs[r]) {
                    // Touching the last run of this copy, on either side: a
                    // page before it (pages need not come in order) extends
                    // it back, never to be dropped.
                    Some(run) if first <= run.end && run.first <= end => {
                        run.first = run.first.min(first);
                        run.end = run.end.max(end);
                    }
                    _ => {
                        last_of.insert(i, runs.len());
                        runs.push(Run {
                            copy: i,
                            first,
                            end,
                        });
                    }
                }
            }
        }
        runs
    }

    /// The pages of the new state that `runs` write, in order.
    pub fn pages_written_by(&self, runs: &[Run]) -> Vec<usize> {
        let mut pages = Vec::new();
        for run in runs {
            let c = &self.copies[run.copy as usize];
            let size = c.to_scalar.size();
            c.walk(run.first, run.end, |_, dst, len, _, _| {
                let start = c.to + dst * size;
                let end = start + len * size;
                if end > start {
                    pages.extend(start / PAGE..end.div_ceil(PAGE));
                }
            });
        }
        pages.sort_unstable();
        pages.dedup();
        pages
    }

    /// Copies `runs` from `old` into `new` as [`Plan::apply`] would. A
    /// value that does not fit a field `--reset-field` names zeroes the
    /// field and is returned in the `Applied`; one that does not fit
    /// another field is the `Err`.
    pub fn apply_runs(&self, runs: &[Run], old: &[u8], new: &mut [u8]) -> Result<Applied, Unfit> {
        let mut applied = Applied::default();
        for run in runs {
            let c = &self.copies[run.copy as usize];
            if applied.reset.iter().any(|r| r.field == c.field) {
                continue;
            }
            let mut unfit = None;
            c.walk(run.first, run.end, |src, dst, len, outer, inner| {
                if unfit.is_none()
                    && let Err(u) = c.copy_elements(old, new, src, dst, len, outer, inner)
                {
                    unfit = Some(u);
                }
            });
            match unfit {
                None => {}
                Some(u) if c.resettable => {
                    c.zero(new);
                    applied.reset.push(Change {
                        field: c.field.clone(),
                        detail: u.value_does_not_fit(),
                    });
                }
                Some(u) => return Err(u),
            }
        }
        Ok(applied)
    }
}

impl Copy {
    /// The first and last page of the old state this copy reads.
    fn src_pages(&self) -> Option<(usize, usize)> {
        let len = self.old_count * self.from_scalar.size();
        (len > 0).then(|| (self.from / PAGE, (self.from + len - 1) / PAGE))
    }

    /// The old elements (memory order) with a byte on page `p`.
    fn elements_on(&self, p: usize) -> Option<(usize, usize)> {
        let size = self.from_scalar.size();
        let field_end = self.from + self.old_count * size;
        let start = (p * PAGE).max(self.from);
        let end = ((p + 1) * PAGE).min(field_end);
        (start < end).then(|| ((start - self.from) / size, (end - self.from).div_ceil(size)))
    }

    /// Calls `each(src, dst, len, outer, inner)` for every stretch of old
    /// elements `first..end` that lands in the new field: `len` elements
    /// from old element `src` to new element `dst`, the outer dimensions'
    /// indices `outer` and the innermost's `inner` (for naming a value).
    fn walk(
        &self,
        first: usize,
        end: usize,
        mut each: impl FnMut(usize, usize, usize, &[usize], usize),
    ) {
        let Some((&inner_shared, outer_shared)) = self.shared.split_last() else {
            return;
        };
        let dims = self.shared.len();
        // The old shape's extent in each dimension, from its strides.
        let extent = |k: usize| match k {
            0 => self.old_count / self.old_strides[0].max(1),
            _ => self.old_strides[k - 1] / self.old_strides[k].max(1),
        };
        let inner_extent = extent(dims - 1).max(1);
        let mut outer = vec![0usize; dims - 1];
        let mut e = first;
        while e < end {
            for (k, index) in outer.iter_mut().enumerate() {
                *index = (e / self.old_strides[k]) % extent(k).max(1);
            }
            let inner = e % inner_extent;
            let row_left = inner_extent - inner;
            let inside = outer.iter().zip(outer_shared).all(|(i, s)| i < s) && inner < inner_shared;
            if !inside {
                e += row_left;
                continue;
            }
            let len = (end - e).min(inner_shared - inner);
            let dst: usize = outer
                .iter()
                .zip(&self.new_strides)
                .map(|(i, s)| i * s)
                .sum::<usize>()
                + inner * self.new_strides[dims - 1];
            each(e, dst, len, &outer, inner);
            e += len.max(1);
        }
    }

    /// Copies `len` elements from old element `src` to new element `dst`,
    /// converting (and checking) each when the type changed.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn copy_elements(
        &self,
        old: &[u8],
        new: &mut [u8],
        src: usize,
        dst: usize,
        len: usize,
        outer: &[usize],
        inner: usize,
    ) -> Result<(), Unfit> {
        let (from_size, to_size) = (self.from_scalar.size(), self.to_scalar.size());
        let src_start = self.from + src * from_size;
        let dst_start = self.to + dst * to_size;
        let src = old.get(src_start..src_start + len * from_size);
        let dst = new.get_mut(dst_start..dst_start + len * to_size);
        let (Some(src), Some(dst)) = (src, dst) else {
            return Ok(());
        };
        if self.from_scalar == self.to_scalar {
            dst.copy_from_slice(src);
            return Ok(());
        }
        for (j, (s, d)) in src
            .chunks_exact(from_size)
            .zip(dst.chunks_exact_mut(to_size))
            .enumerate()
        {
            convert::convert(self.from_scalar, s, self.to_scalar, d)
                .map_err(|value| self.unfit(outer, inner + j, value))?;
        }
        Ok(())
    }

    /// Zeroes the whole new field (a reset).
    pub(super) fn zero(&self, new: &mut [u8]) {
        let size = self.new_count * self.to_scalar.size();
        if let Some(span) = new.get_mut(self.to..self.to + size) {
            span.fill(0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Plan, plan};
    use crate::layout::testing::{I8, I32, I64, layout};
    use crate::layout::{Field, Layout};
    use crate::state::pages::PAGE;

    /// A small generator, so that every run tries the same cases.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    /// Prepares from `before`, patches the pages where `after` differs, and
    /// checks the block equals a full apply of `after`, for many random
    /// edits of `before`. Returns the rounds where the first apply reset a
    /// field and where the patch's result did, to show both were met.
    fn patched_equals_full(
        old: &Layout,
        new: &Layout,
        reset: &[String],
        fit: impl Fn(&mut [u8]),
    ) -> (usize, usize) {
        let mut resets_seen = (0, 0);
        let plan: Plan = plan(old, new, reset).expect("compatible");
        let index = plan.page_index();
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for round in 0..40 {
            let mut before: Vec<u8> = (0..old.size).map(|_| rng.next() as u8).collect();
            fit(&mut before);
            let mut prepared = vec![0u8; new.size];
            let early = plan.apply(&before, &mut prepared).expect("fits");
            // Writes since the copy: a few scattered bytes, a whole page or
            // two, the last page.
            let mut after = before.clone();
            for _ in 0..(1 + rng.below(20)) {
                let at = rng.below(old.size);
                after[at] = rng.next() as u8;
            }
            if round % 3 == 0 {
                let p = rng.below(old.size.div_ceil(PAGE));
                for b in &mut after[p * PAGE..((p + 1) * PAGE).min(old.size)] {
                    *b = rng.next() as u8;
                }
            }
            fit(&mut after);
            let pages: Vec<usize> = (0..old.size.div_ceil(PAGE))
                .filter(|p| {
                    let r = p * PAGE..((p + 1) * PAGE).min(old.size);
                    before[r.clone()] != after[r]
                })
                .collect();
            let mut pages = pages;
            if round % 2 == 1 {
                // As a refresh of the snapshot can give them: out of order,
                // and a page twice.
                pages.reverse();
                if let Some(&p) = pages.last() {
                    pages.insert(0, p);
                }
            }
            let runs = plan.runs_reading(&index, &pages, &early.reset);
            let written = plan.pages_written_by(&runs);
            let mut patched = prepared.clone();
            let late = plan.apply_runs(&runs, &after, &mut patched).expect("fits");
            let mut full = vec![0u8; new.size];
            let whole = plan.apply(&after, &mut full).expect("fits");
            assert!(patched == full, "round {round}: the patched block differs");
            let resets =
                |a: &[super::Change]| a.iter().map(|c| c.field.clone()).collect::<Vec<_>>();
            assert_eq!(
                resets(&late.reset),
                resets(&whole.reset),
                "round {round}: resets"
            );
            resets_seen.0 += usize::from(!early.reset.is_empty());
            resets_seen.1 += usize::from(!late.reset.is_empty());
            // Every page the patch changed is among those it said it writes.
            for p in 0..new.size.div_ceil(PAGE) {
                let r = p * PAGE..((p + 1) * PAGE).min(new.size);
                if prepared[r.clone()] != patched[r] {
                    assert!(
                        written.contains(&p),
                        "round {round}: page {p} written unsaid"
                    );
                }
            }
        }
        resets_seen
    }

    #[test]
    fn a_byte_array_moved_by_a_new_field() {
        let size = 16 * PAGE;
        let old = layout(
            size,
            vec![
                Field::new("n", 0, I64, 1),
                Field::new("bytes", 8, I8, size - 8),
            ],
        );
        let new = layout(
            size + 8,
            vec![
                Field::new("n", 0, I64, 1),
                Field::new("m", 8, I64, 1),
                Field::new("bytes", 16, I8, size - 8),
            ],
        );
        patched_equals_full(&old, &new, &[], |_| {});
    }

    #[test]
    fn a_grid_that_widens_and_changes_shape() {
        let old = layout(
            4 + 64 * 100 * 4,
            vec![
                Field::new("t", 0, I32, 1),
                Field::array("grid", 4, I32, vec![64, 100]),
            ],
        );
        let new = layout(
            16 + 80 * 90 * 8,
            vec![
                Field::new("t", 8, I64, 1),
                Field::array("grid", 16, I64, vec![80, 90]),
            ],
        );
        patched_equals_full(&old, &new, &[], |_| {});
    }

    #[test]
    fn a_field_that_gains_dimensions() {
        let old = layout(6000 * 4, vec![Field::new("cells", 0, I32, 6000)]);
        let new = layout(
            6000 * 4 + 64,
            vec![Field::array("cells", 64, I32, vec![60, 100])],
        );
        patched_equals_full(&old, &new, &[], |_| {});
    }

    #[test]
    fn a_narrowing_that_stops_fitting_after_the_copy_resets_its_field() {
        let count = 3 * PAGE / 8;
        let old = layout(count * 8, vec![Field::new("wide", 0, I64, count)]);
        let new = layout(count * 4, vec![Field::new("wide", 0, I32, count)]);
        // Values that fit, but for one element of every 500th round of
        // bytes: so some edits make a value that no longer fits.
        let (early, late) = patched_equals_full(&old, &new, &["wide".to_owned()], |bytes| {
            for (i, v) in bytes.chunks_exact_mut(8).enumerate() {
                let small = i64::from(v[0]) - 128;
                let value = if v[1] == 7 && i % 3 == 0 {
                    1i64 << 40
                } else {
                    small
                };
                v.copy_from_slice(&value.to_ne_bytes());
            }
        });
        // Both ways round: reset before and carried at the swap, and not.
        assert!(
            early > 0 && early < 40,
            "reset by the first apply in {early} of 40 rounds"
        );
        assert!(
            late != early,
            "the patch changed no reset ({late} and {early})"
        );
    }

    #[test]
    fn a_value_that_stops_fitting_unnamed_is_refused() {
        let count = 2 * PAGE / 8;
        let old = layout(count * 8, vec![Field::new("wide", 0, I64, count)]);
        let new = layout(count * 4, vec![Field::new("wide", 0, I32, count)]);
        let plan = plan(&old, &new, &[]).expect("compatible");
        let before = vec![0u8; count * 8];
        let mut prepared = vec![0u8; count * 4];
        plan.apply(&before, &mut prepared).expect("fits");
        let mut after = before.clone();
        after[PAGE + 8..PAGE + 16].copy_from_slice(&(1i64 << 40).to_ne_bytes());
        let runs = plan.runs_reading(&plan.page_index(), &[1], &[]);
        let unfit = plan
            .apply_runs(&runs, &after, &mut prepared)
            .expect_err("does not fit");
        assert_eq!(unfit.element, format!("wide[{}]", PAGE / 8 + 1));
    }
}
