//! The reload line's account of a migration, one readable line however many
//! fields changed: entries that differ only in their element indices
//! collapse into one with a count (`+brick[*][*].hits (100)`), and past
//! [`MOST_ENTRIES`] the rest is counted, not listed.

use std::collections::HashMap;

use crate::pattern::any_index;

/// Entries listed before the rest is only counted.
pub const MOST_ENTRIES: usize = 24;

/// One change: its mark (`+`, `-`, `~`, `reset `), the field or elements,
/// and what changed about it.
pub(super) struct Entry<'a> {
    pub mark: &'static str,
    pub path: &'a str,
    pub detail: Option<&'a str>,
}

/// What entries collapse by: their mark, their path with every index a
/// wildcard, and their detail.
type Group<'a> = (&'a str, String, Option<&'a str>);

/// `+lives -bonus ~score (int32 → int64)`, collapsed.
pub(super) fn line<'a>(entries: impl IntoIterator<Item = Entry<'a>>) -> String {
    capped(collapsed(entries)).join(" ")
}

/// `a, b, brick[*][*].hits (100)`: names collapsed the same way.
pub(super) fn names<'a>(paths: impl IntoIterator<Item = &'a str>) -> String {
    let entries = paths.into_iter().map(|path| Entry {
        mark: "",
        path,
        detail: None,
    });
    capped(collapsed(entries)).join(", ")
}

fn collapsed<'a>(entries: impl IntoIterator<Item = Entry<'a>>) -> Vec<String> {
    // Groups in the order of their first entry: (mark, pattern, detail), count, first path.
    let mut groups: Vec<(Group, usize, &str)> = Vec::new();
    let mut at: HashMap<Group, usize> = HashMap::new();
    for e in entries {
        let key = (e.mark, any_index(e.path), e.detail);
        match at.get(&key) {
            Some(&i) => groups[i].1 += 1,
            None => {
                at.insert(key.clone(), groups.len());
                groups.push((key, 1, e.path));
            }
        }
    }
    groups
        .iter()
        .map(|((mark, pattern, detail), n, first)| match (n, detail) {
            (1, None) => format!("{mark}{first}"),
            (1, Some(detail)) => format!("{mark}{first} ({detail})"),
            (n, None) => format!("{mark}{pattern} ({n})"),
            (n, Some(detail)) => format!("{mark}{pattern} ({detail}, {n})"),
        })
        .collect()
}

fn capped(mut parts: Vec<String>) -> Vec<String> {
    if parts.len() > MOST_ENTRIES {
        let more = parts.len() - MOST_ENTRIES;
        parts.truncate(MOST_ENTRIES);
        parts.push(format!("and {more} more"));
    }
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plus(path: &str) -> Entry<'_> {
        Entry {
            mark: "+",
            path,
            detail: None,
        }
    }

    #[test]
    fn per_element_entries_collapse_with_a_count() {
        let paths: Vec<String> = (0..5)
            .flat_map(|r| (0..20).map(move |c| format!("brick[{r}][{c}].hits")))
            .collect();
        let mut entries: Vec<Entry> = paths.iter().map(|p| plus(p)).collect();
        entries.insert(0, plus("lives"));
        entries.push(Entry {
            mark: "~",
            path: "score",
            detail: Some("int32 → int64"),
        });
        assert_eq!(
            line(entries),
            "+lives +brick[*][*].hits (100) ~score (int32 → int64)"
        );
    }

    #[test]
    fn a_long_account_is_cut_and_counted() {
        let paths: Vec<String> = (0..30).map(|i| format!("f{i}")).collect();
        let text = line(paths.iter().map(|p| plus(p)));
        assert!(text.ends_with("+f23 and 6 more"), "{text}");
        assert_eq!(names(["a", "b[0].x", "b[1].x"]), "a, b[*].x (2)");
    }
}
