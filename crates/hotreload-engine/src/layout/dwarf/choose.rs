//! Which type is the state: by `--state-type`, by the name `state_t`, or as
//! the only struct of the state's size.

use std::collections::HashMap;

use gimli::DwTag;

use super::{CONVENTIONAL_NAME, Types, is_aggregate, is_struct, never_by_size};

/// Whether `path` (`rsplug::game::State`) is what `wanted` names: the plain
/// name matches the last segment, a path (`game::State`) the last segments.
fn names(path: &str, wanted: &str) -> bool {
    if wanted.contains("::") {
        path == wanted
            || path
                .strip_suffix(wanted)
                .is_some_and(|rest| rest.ends_with("::"))
    } else {
        path.rsplit("::").next() == Some(wanted)
    }
}

/// The tags `struct NAME`, `class NAME`, `union NAME`, `enum NAME` ask for.
const TAGGED: [(&str, &[DwTag]); 4] = [
    (
        "struct ",
        &[gimli::DW_TAG_structure_type, gimli::DW_TAG_class_type],
    ),
    (
        "class ",
        &[gimli::DW_TAG_class_type, gimli::DW_TAG_structure_type],
    ),
    ("union ", &[gimli::DW_TAG_union_type]),
    ("enum ", &[gimli::DW_TAG_enumeration_type]),
];

/// Any tag a bare name may stand for.
const ANY_TAG: &[DwTag] = &[
    gimli::DW_TAG_structure_type,
    gimli::DW_TAG_class_type,
    gimli::DW_TAG_union_type,
    gimli::DW_TAG_enumeration_type,
];

impl Types {
    /// The type `name` names: a typedef, else a tag (only a tag for
    /// `struct NAME` and the like), by plain name or by path. Returns it and
    /// how to call it; `Err` when the name fits two different types.
    pub(super) fn lookup(&self, name: &str) -> Result<Option<(usize, String)>, String> {
        let name = name.trim();
        let tagged = TAGGED
            .iter()
            .find_map(|(prefix, tags)| Some((name.strip_prefix(prefix)?.trim(), *tags)));
        let (bare, tags) = match tagged {
            Some(t) => t,
            None => {
                let typedefs = self.dies.iter().enumerate().filter_map(|(index, d)| {
                    let path = d.path()?;
                    (d.file_scope && d.tag == gimli::DW_TAG_typedef && names(&path, name))
                        .then_some((index, path))
                });
                if let Some(found) = one_of(name, typedefs)? {
                    return Ok(Some(found));
                }
                (name, ANY_TAG)
            }
        };
        // Each tag in the order asked; a path defined under two tags (a
        // struct in one unit, a class in another) is still one type.
        let mut matches: Vec<(usize, String)> = Vec::new();
        for &tag in tags {
            let mut of_tag: Vec<(&String, usize)> = self
                .definitions
                .iter()
                .filter(|((t, path), _)| *t == tag && names(path, bare))
                .map(|((_, path), &index)| (path, index))
                .collect();
            of_tag.sort();
            for (path, index) in of_tag {
                if !matches.iter().any(|(_, p)| p == path) {
                    matches.push((index, path.clone()));
                }
            }
        }
        Ok(one_of(name, matches.into_iter())?.map(|(index, _)| (index, self.describe(index))))
    }

    /// Every named file-scope struct a plugin's author wrote: (how to call
    /// it, its size, index). A struct is called by its first typedef, else
    /// `struct tag`; the copies from several units count once.
    fn structs(&self) -> Vec<(String, u64, usize)> {
        let mut typedef_names: HashMap<usize, String> = HashMap::new();
        for die in &self.dies {
            if let (true, gimli::DW_TAG_typedef, Some(name), Some(ty)) =
                (die.file_scope, die.tag, die.path(), die.ty)
                && let Ok(target) = self.target(ty, &name)
                && let Ok(target) = self.strip(target, &name)
            {
                typedef_names.entry(target).or_insert(name);
            }
        }
        // One entry per tag (per typedef for an anonymous struct): (key,
        // typedef name, size, index).
        let mut groups: Vec<(String, Option<String>, u64, usize)> = Vec::new();
        let mut seen: HashMap<String, usize> = HashMap::new();
        for (index, die) in self.dies.iter().enumerate() {
            if !die.file_scope || die.declaration || !is_struct(die.tag) {
                continue;
            }
            let Some(size) = die.byte_size else {
                continue;
            };
            let typedef = typedef_names.get(&index).cloned();
            let key = match (&die.name, &typedef) {
                (Some(_), _) => self.describe(index),
                (None, Some(typedef)) => typedef.clone(),
                (None, None) => continue,
            };
            if never_by_size(&key) {
                continue;
            }
            match seen.get(&key) {
                Some(&at) => groups[at].1 = groups[at].1.take().or(typedef),
                None => {
                    seen.insert(key.clone(), groups.len());
                    groups.push((key, typedef, size, index));
                }
            }
        }
        groups
            .into_iter()
            .map(|(key, typedef, size, index)| (typedef.unwrap_or(key), size, index))
            .collect()
    }

    /// "structs of 16 bytes: a_t, b_t", or what there is instead.
    fn structs_of(&self, size: usize) -> String {
        const SHOWN: usize = 12;
        let all = self.structs();
        let fit: Vec<&str> = all
            .iter()
            .filter(|(_, s, _)| *s == size as u64)
            .map(|(n, _, _)| n.as_str())
            .collect();
        let list = |items: Vec<String>| {
            let more = items.len().saturating_sub(SHOWN);
            let mut shown: Vec<String> = items.into_iter().take(SHOWN).collect();
            if more > 0 {
                shown.push(format!("and {more} more"));
            }
            shown.join(", ")
        };
        if !fit.is_empty() {
            return format!(
                "structs of {size} bytes: {}",
                list(fit.iter().map(|s| s.to_string()).collect())
            );
        }
        if all.is_empty() {
            return "the debug info describes no structs".into();
        }
        format!(
            "no struct is {size} bytes; structs: {}",
            list(
                all.iter()
                    .map(|(n, s, _)| format!("{n} ({s} bytes)"))
                    .collect()
            )
        )
    }

    /// The state's type: (DIE, its name, why it was chosen).
    pub(super) fn choose(
        &self,
        state_size: usize,
        wanted: Option<&str>,
    ) -> Result<(usize, String, String), String> {
        let has_types = self
            .dies
            .iter()
            .any(|d| d.file_scope && (d.tag == gimli::DW_TAG_typedef || is_aggregate(d.tag)));
        if !has_types {
            return Err(match &self.split {
                Some(dwo) => format!(
                    "the debug info is split (-gsplit-dwarf): the types are in {dwo}, which \
                     this reader does not open; build without -gsplit-dwarf"
                ),
                None => "the library's debug info describes no types (built with -g1, or \
                         only some of its objects with -g?)"
                    .into(),
            });
        }
        if let Some(wanted) = wanted {
            return match self.lookup(wanted)? {
                Some((index, name)) => Ok((index, name, "--state-type".into())),
                None => Err(format!(
                    "no type named {wanted} (--state-type) in the debug info; {}",
                    self.structs_of(state_size)
                )),
            };
        }
        if let Some((index, name)) = self.lookup(CONVENTIONAL_NAME)? {
            return Ok((index, name, format!("the name {CONVENTIONAL_NAME}")));
        }
        let fit: Vec<(String, u64, usize)> = self
            .structs()
            .into_iter()
            .filter(|(_, size, _)| *size == state_size as u64)
            .collect();
        match fit.as_slice() {
            [(name, _, index)] => Ok((
                *index,
                name.clone(),
                format!("its size (the only {state_size}-byte struct)"),
            )),
            [] => Err(format!(
                "no type named {CONVENTIONAL_NAME} in the debug info and no struct of the \
                 state's {state_size} bytes; {}; name the state's type with --state-type",
                self.structs_of(state_size)
            )),
            many => Err(format!(
                "no type named {CONVENTIONAL_NAME} in the debug info, and {} structs of the \
                 state's {state_size} bytes: {}; choose one with --state-type",
                many.len(),
                many.iter()
                    .map(|(n, _, _)| n.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        }
    }
}

/// The one type of `found` (by distinct path), none, or an error naming
/// every path `wanted` could mean.
fn one_of(
    wanted: &str,
    found: impl Iterator<Item = (usize, String)>,
) -> Result<Option<(usize, String)>, String> {
    let mut distinct: Vec<(usize, String)> = Vec::new();
    for (index, path) in found {
        if !distinct.iter().any(|(_, p)| *p == path) {
            distinct.push((index, path));
        }
    }
    match distinct.len() {
        0 | 1 => Ok(distinct.pop()),
        _ => {
            let mut paths: Vec<&str> = distinct.iter().map(|(_, p)| p.as_str()).collect();
            paths.sort_unstable();
            Err(format!(
                "the type name {wanted} is ambiguous: expected one type, found {} ({}); \
                 name one by its path with --state-type",
                distinct.len(),
                paths.join(", ")
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::names;

    #[test]
    fn plain_names_and_paths() {
        assert!(names("rsplug::game::State", "State"));
        assert!(names("rsplug::game::State", "game::State"));
        assert!(names("rsplug::game::State", "rsplug::game::State"));
        assert!(!names("rsplug::game::State", "ame::State"));
        assert!(!names("rsplug::game::State", "other::State"));
        assert!(names("state_t", "state_t"));
        assert!(!names("state_t", "state"));
    }
}
