//! Moving the state from one layout to another, field by field.
//!
//! When a new version changes the state (adds, removes, reorders, resizes,
//! retypes fields), the host copies every field the two layouts share by
//! name into a fresh zeroed block of the new size, leaves new fields zero,
//! and reports the ones dropped. The plugin's own `migrate` hook, if any,
//! runs afterwards to fix up what names alone cannot say.
//!
//! Arrays are copied index by index: of `int grid[2][3]` becoming `int
//! grid[2][4]`, each row keeps its three values and gains a zero, rather
//! than the rows sliding into one another. What lies outside the box both
//! shapes share is named like a field: `-b[2..4]` for `int b[4]` becoming
//! `int b[2]`, `+grid[*][3]` for the new column. A change of the number of
//! dimensions keeps the values in memory order when the element count
//! stays (`[6]` → `[2][3]`, how a state file written before shapes were
//! recorded reads) and is refused otherwise. A plain scalar is an array of
//! one element here, so `int a` may become `int a[4]` (the value goes to
//! `a[0]`).
//!
//! Types convert as `convert` says: a widening always, a narrowing with
//! every value checked as it is copied ([`Plan::apply`] is fallible and
//! stops at the first value that does not fit), a change that could never
//! keep values (double → int, anything ↔ pointer) not at all. A field that
//! cannot be carried refuses the new version, saying how to reset just that
//! field: a field the user named with `--reset-field` starts at zero in the
//! new version instead, and the reload line names it. A field that can be
//! carried is carried, named or not: the flag lasts the whole session, and
//! resetting a field on every later migration would lose it each time.

pub mod ahead;
mod convert;
mod patch;
mod summary;

use std::collections::HashMap;
use std::fmt;

use crate::layout::{Field, Layout, Scalar};
use crate::pattern::{any_index, selects_field, shell_word};

use convert::Kind;
use summary::Entry;

pub use patch::{PageIndex, Run};
pub use summary::MOST_ENTRIES;

/// One shared field whose type or shape changed, and how.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    pub field: String,
    /// `int32 → int64`, `[6] → [2][3]`.
    pub detail: String,
}

/// How to turn one state into the other.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    copies: Vec<Copy>,
    /// Fields only the new layout has, and elements only a new shape has
    /// (`grid[*][3]`): they start at zero.
    pub added: Vec<String>,
    /// Fields only the old layout has, and elements only the old shape had
    /// (`b[2..4]`): their values are gone.
    pub dropped: Vec<String>,
    /// Shared fields whose type widened: every value fits.
    pub widened: Vec<Change>,
    /// Shared fields whose type narrowed: each value is checked by `apply`.
    pub narrowed: Vec<Change>,
    /// Shared fields that kept their elements in a new number of dimensions.
    pub reshaped: Vec<Change>,
    /// Fields that could not be carried and start at zero, as `--reset-field`
    /// asked; the detail says why they could not.
    pub reset: Vec<Change>,
    /// Shared fields that moved to another offset.
    pub moved: Vec<String>,
    pub old_size: usize,
    pub new_size: usize,
}

#[derive(Clone, Debug, PartialEq)]
struct Copy {
    field: String,
    from: usize,
    to: usize,
    from_scalar: Scalar,
    to_scalar: Scalar,
    /// The box both shapes share, per dimension (a plain scalar as one
    /// element), and each shape's strides in elements: worked out when
    /// the plan is made, so that `apply` on the tick thread allocates
    /// nothing per field.
    shared: Vec<usize>,
    old_strides: Vec<usize>,
    new_strides: Vec<usize>,
    /// Elements of the new field, to zero it on a reset.
    new_count: usize,
    /// Elements of the old field.
    old_count: usize,
    /// Whether the field is an array, for naming an element in messages.
    indexed: bool,
    /// `--reset-field` names it: a value that does not fit zeroes the field
    /// instead of refusing the version.
    resettable: bool,
}

/// Why two layouts cannot be migrated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Incompatible {
    pub field: String,
    pub from: String,
    pub to: String,
    pub why: String,
}

impl Incompatible {
    /// What cannot be carried, without what happens then.
    pub fn reason(&self) -> String {
        format!(
            "field {}: expected it to stay {} or become a type that holds its values, found {} \
             ({})",
            self.field, self.from, self.to, self.why
        )
    }
}

impl fmt::Display for Incompatible {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}; {}", self.reason(), reset_hint(&self.field))
    }
}

/// A value that does not fit its field's new type, found by [`Plan::apply`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unfit {
    /// The field, with the element's index for an array: `grid[1][2]`.
    pub element: String,
    pub field: String,
    pub value: String,
    pub to: Scalar,
}

impl Unfit {
    /// `value 3000000000 does not fit int32`, for the reload line.
    fn value_does_not_fit(&self) -> String {
        format!("value {} does not fit {}", self.value, self.to)
    }

    /// What cannot be carried, without what happens then.
    pub fn reason(&self) -> String {
        format!("field {}: {}", self.element, self.value_does_not_fit())
    }
}

impl fmt::Display for Unfit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}; {}", self.reason(), reset_hint(&self.field))
    }
}

/// What happens to a field that cannot be carried, and how to reset only it.
fn reset_hint(field: &str) -> String {
    format!(
        "the new version is refused; to start {field} at zero in it instead, pass \
         --reset-field {}",
        shell_word(&any_index(field))
    )
}

/// Why the state cannot go back to an earlier version's layout on a
/// rollback, and how it could.
pub fn rollback_refusal(reason: &str, field: &str) -> String {
    format!(
        "{reason}; with --reset-field {} it would start at zero there",
        shell_word(&any_index(field))
    )
}

/// What [`Plan::apply`] did besides copying.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Applied {
    /// Fields `--reset-field` named that had a value that did not fit:
    /// they start at zero. The detail is the first such value.
    pub reset: Vec<Change>,
}

impl Change {
    fn entry(&self, mark: &'static str) -> Entry<'_> {
        Entry {
            mark,
            path: &self.field,
            detail: Some(&self.detail),
        }
    }
}

/// `int32`, `int32[2][3]`, for messages.
fn describe(field: &Field) -> String {
    format!("{}{}", field.scalar, field.extent())
}

/// A field's dimensions with a plain scalar as one element.
fn dims_of(field: &Field) -> Vec<usize> {
    if field.dims.is_empty() {
        vec![1]
    } else {
        field.dims.clone()
    }
}

/// `2..4`, or `3` for a range of one.
fn range(start: usize, end: usize) -> String {
    if end == start + 1 {
        start.to_string()
    } else {
        format!("{start}..{end}")
    }
}

/// The elements of an array of `dims` that lie outside the box of `other`
/// (the same number of dimensions), as slabs: `grid[2][*]`,
/// `grid[0..2][3]`. A dimension is `*` where every index of it is meant.
fn outside(name: &str, dims: &[usize], other: &[usize]) -> Vec<String> {
    let mut slabs = Vec::new();
    for k in 0..dims.len() {
        if dims[k] <= other[k] {
            continue;
        }
        let mut slab = name.to_owned();
        let mut empty = false;
        for j in 0..dims.len() {
            let part = if j < k {
                let shared = dims[j].min(other[j]);
                empty |= shared == 0;
                if shared == dims[j] {
                    "*".to_owned()
                } else {
                    range(0, shared)
                }
            } else if j == k {
                range(other[k], dims[k])
            } else {
                "*".to_owned()
            };
            slab.push_str(&format!("[{part}]"));
        }
        if !empty {
            slabs.push(slab);
        }
    }
    slabs
}

/// Row-major strides, in elements, of an array of `dims`.
fn strides(dims: &[usize]) -> Vec<usize> {
    (0..dims.len())
        .map(|k| dims[k + 1..].iter().product())
        .collect()
}

/// The shapes a shared field is copied between, or why it cannot be.
enum Shapes {
    /// Index by index within the box both share.
    Boxed(Vec<usize>, Vec<usize>),
    /// A new number of dimensions, the same elements in memory order.
    Reshaped,
}

fn shapes(o: &Field, n: &Field) -> Result<Shapes, String> {
    let (od, nd) = (dims_of(o), dims_of(n));
    if od.len() == nd.len() {
        return Ok(Shapes::Boxed(od, nd));
    }
    if o.count == n.count {
        return Ok(Shapes::Reshaped);
    }
    Err(format!(
        "{} dimensions became {} and the element count changed from {} to {}, so no element \
         has a place to go",
        od.len(),
        nd.len(),
        o.count,
        n.count
    ))
}

/// The plan for carrying a state of layout `old` into layout `new`.
/// `reset` holds the `--reset-field` patterns: a field they select that
/// cannot be carried starts at zero instead of refusing the new version.
pub fn plan(old: &Layout, new: &Layout, reset: &[String]) -> Result<Plan, Incompatible> {
    let mut plan = Plan {
        copies: Vec::new(),
        added: Vec::new(),
        dropped: Vec::new(),
        widened: Vec::new(),
        narrowed: Vec::new(),
        reshaped: Vec::new(),
        reset: Vec::new(),
        moved: Vec::new(),
        old_size: old.size,
        new_size: new.size,
    };
    let old_fields: HashMap<&str, &Field> =
        old.fields.iter().map(|f| (f.name.as_str(), f)).collect();
    let mut shared: HashMap<&str, Vec<String>> = HashMap::new();
    for n in &new.fields {
        let Some(o) = old_fields.get(n.name.as_str()).copied() else {
            plan.added.push(n.name.clone());
            continue;
        };
        shared.insert(&n.name, Vec::new());
        if o.offset != n.offset {
            plan.moved.push(n.name.clone());
        }
        if n.transient {
            // Reset on every reload anyway: nothing to carry, nothing to check.
            continue;
        }
        let resettable = reset.iter().any(|p| selects_field(p, &n.name));
        let carried = convert::classify(o.scalar, n.scalar)
            .map_err(str::to_owned)
            .and_then(|kind| Ok((kind, shapes(o, n)?)));
        let (kind, shapes) = match carried {
            Ok(found) => found,
            Err(why) if resettable => {
                plan.reset.push(Change {
                    field: n.name.clone(),
                    detail: format!("{} → {}: {why}", describe(o), describe(n)),
                });
                continue;
            }
            Err(why) => {
                return Err(Incompatible {
                    field: n.name.clone(),
                    from: describe(o),
                    to: describe(n),
                    why,
                });
            }
        };
        let type_change = || Change {
            field: n.name.clone(),
            detail: format!("{} → {}", o.scalar, n.scalar),
        };
        match kind {
            Kind::Same => {}
            Kind::Widen => plan.widened.push(type_change()),
            Kind::Narrow => plan.narrowed.push(type_change()),
        }
        let (old_dims, new_dims) = match shapes {
            Shapes::Boxed(od, nd) => {
                plan.added.extend(outside(&n.name, &nd, &od));
                if let Some(dropped) = shared.get_mut(n.name.as_str()) {
                    dropped.extend(outside(&n.name, &od, &nd));
                }
                (od, nd)
            }
            Shapes::Reshaped => {
                plan.reshaped.push(Change {
                    field: n.name.clone(),
                    detail: format!("{} → {}", o.extent(), n.extent()),
                });
                (vec![o.count], vec![n.count])
            }
        };
        plan.copies.push(Copy {
            field: n.name.clone(),
            from: o.offset,
            to: n.offset,
            from_scalar: o.scalar,
            to_scalar: n.scalar,
            shared: old_dims
                .iter()
                .zip(&new_dims)
                .map(|(a, b)| (*a).min(*b))
                .collect(),
            old_strides: strides(&old_dims),
            new_strides: strides(&new_dims),
            new_count: n.count,
            old_count: old_dims.iter().product(),
            indexed: !n.dims.is_empty() || !o.dims.is_empty(),
            resettable,
        });
    }
    for o in &old.fields {
        match shared.get(o.name.as_str()) {
            None => plan.dropped.push(o.name.clone()),
            Some(elements) => plan.dropped.extend(elements.iter().cloned()),
        }
    }
    Ok(plan)
}

impl Plan {
    /// Whether anything changes at all.
    pub fn is_identity(&self) -> bool {
        self.old_size == self.new_size
            && self.added.is_empty()
            && self.dropped.is_empty()
            && self.widened.is_empty()
            && self.narrowed.is_empty()
            && self.reshaped.is_empty()
            && self.reset.is_empty()
            && self.moved.is_empty()
    }

    /// Copies what the plan says from `old` into `new`, which must be zeroed
    /// and `new_size` long, checking every narrowed value as it goes (one
    /// pass over the state, nothing scanned twice). `Err` names the first
    /// value that does not fit a field `--reset-field` does not name; `new`
    /// is then half-filled and must be thrown away, while `old` is never
    /// written.
    pub fn apply(&self, old: &[u8], new: &mut [u8]) -> Result<Applied, Unfit> {
        let mut applied = Applied::default();
        let mut index = Vec::new();
        for c in &self.copies {
            match c.run(old, new, &mut index) {
                Ok(()) => {}
                Err(unfit) if c.resettable => {
                    c.zero(new);
                    applied.reset.push(Change {
                        field: c.field.clone(),
                        detail: unfit.value_does_not_fit(),
                    });
                }
                Err(unfit) => return Err(unfit),
            }
        }
        Ok(applied)
    }

    /// `+lives -bonus ~score (int32 → int64)`, for the reload line; entries
    /// that differ only in element indices collapse into one.
    pub fn summary(&self) -> String {
        self.account(&Applied::default())
    }

    /// The summary once `apply` has run: a narrowed field it reset is named
    /// as reset, with the value that did not fit, not as narrowed.
    pub fn summary_after(&self, applied: &Applied) -> String {
        self.account(applied)
    }

    fn account(&self, applied: &Applied) -> String {
        let mut entries: Vec<Entry> = Vec::new();
        fn plain<'a>(mark: &'static str, path: &'a String) -> Entry<'a> {
            Entry {
                mark,
                path,
                detail: None,
            }
        }
        entries.extend(self.added.iter().map(|n| plain("+", n)));
        entries.extend(self.dropped.iter().map(|n| plain("-", n)));
        entries.extend(self.widened.iter().map(|c| c.entry("~")));
        let reset_now = |field: &str| applied.reset.iter().any(|r| r.field == field);
        let checked: Vec<Change> = self
            .narrowed
            .iter()
            .filter(|c| !reset_now(&c.field))
            .map(|c| Change {
                field: c.field.clone(),
                detail: format!("{}, every value checked", c.detail),
            })
            .collect();
        entries.extend(checked.iter().map(|c| c.entry("~")));
        entries.extend(self.reshaped.iter().map(|c| c.entry("~")));
        entries.extend(self.reset.iter().map(|c| c.entry("reset ")));
        entries.extend(applied.reset.iter().map(|c| c.entry("reset ")));
        if entries.is_empty() && !self.moved.is_empty() {
            return format!(
                "reordered {}",
                summary::names(self.moved.iter().map(String::as_str))
            );
        }
        summary::line(entries)
    }
}

impl Copy {
    /// The box both shapes share, index by index: whole innermost runs at a
    /// time, as bytes when the type is the same.
    fn run(&self, old: &[u8], new: &mut [u8], index: &mut Vec<usize>) -> Result<(), Unfit> {
        let Some((&run, outer)) = self.shared.split_last() else {
            return Ok(());
        };
        if self.shared.contains(&0) {
            return Ok(());
        }
        let (old_strides, new_strides) = (&self.old_strides, &self.new_strides);
        index.clear();
        index.resize(outer.len(), 0);
        loop {
            let at = |strides: &[usize]| -> usize {
                index.iter().zip(strides).map(|(i, s)| i * s).sum()
            };
            let (src_elem, dst_elem) = (at(old_strides), at(new_strides));
            self.copy_elements(old, new, src_elem, dst_elem, run, index, 0)?;
            // The next index of the outer dimensions, last fastest.
            let mut k = outer.len();
            loop {
                if k == 0 {
                    return Ok(());
                }
                k -= 1;
                index[k] += 1;
                if index[k] < outer[k] {
                    break;
                }
                index[k] = 0;
            }
        }
    }

    fn unfit(&self, outer: &[usize], last: usize, value: String) -> Unfit {
        let mut element = self.field.clone();
        if self.indexed {
            for i in outer.iter().chain(std::iter::once(&last)) {
                element.push_str(&format!("[{i}]"));
            }
        }
        Unfit {
            element,
            field: self.field.clone(),
            value,
            to: self.to_scalar,
        }
    }
}

/// What is known about the state on one side of a swap.
#[derive(Clone, Copy)]
pub struct Side<'a> {
    pub size: usize,
    /// The plugin's declared state version (0 without the extended ABI).
    pub version: u32,
    pub layout: Option<&'a Layout>,
    /// The incoming version has a `migrate` hook.
    pub has_hook: bool,
}

/// What a swap does to the state.
#[derive(Clone, Debug, PartialEq)]
pub enum Decision {
    /// The new code runs on the very same bytes.
    Keep,
    /// A new block is made: by `plan` (when both layouts are known), then by
    /// the new version's hook (when it has one).
    Migrate {
        plan: Option<Box<Plan>>,
        summary: String,
    },
}

/// Decides how the state crosses from `old` to `new`, with `reset` the
/// `--reset-field` patterns. `Err` says why it cannot: the new version is
/// then refused (exit code 10).
pub fn decide(old: Side, new: Side, reset: &[String]) -> Result<Decision, String> {
    let both = old.layout.zip(new.layout);
    let changed_shape = old.size != new.size || both.is_some_and(|(o, n)| !o.same_shape(n));
    let changed_version = old.version != new.version;
    if !changed_shape && !changed_version {
        return Ok(Decision::Keep);
    }
    if let Some((o, n)) = both {
        let plan = plan(o, n, reset).map_err(|e| e.to_string())?;
        let mut summary = plan.summary();
        if changed_version {
            let v = format!("state version {} → {}", old.version, new.version);
            summary = if summary.is_empty() {
                v
            } else {
                format!("{summary}; {v}")
            };
        }
        if summary.is_empty() {
            summary = format!("{} → {} bytes", old.size, new.size);
        }
        return Ok(Decision::Migrate {
            plan: Some(Box::new(plan)),
            summary,
        });
    }
    if new.has_hook {
        return Ok(Decision::Migrate {
            plan: None,
            summary: format!(
                "by the plugin's migrate hook ({} → {} bytes)",
                old.size, new.size
            ),
        });
    }
    let what = if changed_shape {
        format!("the state changed from {} to {} bytes", old.size, new.size)
    } else {
        format!(
            "state_version changed from {} to {}",
            old.version, new.version
        )
    };
    let unknown = match (old.layout.is_some(), new.layout.is_some()) {
        (false, false) => "neither version's layout is known",
        (true, false) => "the new version's layout is not known",
        _ => "the running version's layout is not known",
    };
    Err(format!(
        "{what}, but {unknown} and there is no migrate hook: build with -g or declare a schema \
         (or restart hotreload to start over with the new state)"
    ))
}

/// `summary` (from [`decide`]) once `plan` was applied: with the fields
/// `apply` reset named as reset.
pub fn with_resets(summary: String, plan: &Plan, applied: &Applied) -> String {
    if applied.reset.is_empty() {
        return summary;
    }
    // What `decide` added after the plan's own account: the state version.
    let rest = summary.strip_prefix(&plan.summary()).unwrap_or_default();
    format!("{}{rest}", plan.summary_after(applied))
}

#[cfg(test)]
mod tests;
