//! Shell-style wildcards: `*` matches any run of characters, `?` exactly
//! one, everything else itself. File names use them (`--ignore`), and so do
//! the state's field paths (`--reset-field 'enemies[*].hp'`,
//! `--state-fields grid`), where `[` and `]` are plain characters so that a
//! path can be written as C writes it.

/// Whether `pattern` matches the whole of `name`.
pub fn wildcard_match(pattern: &str, name: &str) -> bool {
    // Run for every file of every poll: names are nearly always ASCII, and
    // then bytes are characters and nothing needs to be allocated.
    if pattern.is_ascii() && name.is_ascii() {
        return match_units(pattern.as_bytes(), name.as_bytes(), b'*', b'?');
    }
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    match_units(&p, &n, '*', '?')
}

fn match_units<T: PartialEq + Copy>(p: &[T], n: &[T], any_run: T, any_one: T) -> bool {
    let (mut pi, mut ni) = (0, 0);
    // Where the last `*` was, and how much of the name it has swallowed.
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        if pi < p.len() && (p[pi] == any_one || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == any_run {
            star = Some((pi, ni));
            pi += 1;
        } else if let Some((sp, sn)) = star {
            pi = sp + 1;
            ni = sn + 1;
            star = Some((sp, sn + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == any_run)
}

/// Whether `pattern` names the field at `path` or a struct or array element
/// it lies in: `enemies` and `enemies[1]` both select `enemies[1].hp`, as
/// `pos` selects `pos.x`.
pub fn selects_field(pattern: &str, path: &str) -> bool {
    wildcard_match(pattern, path)
        || path
            .char_indices()
            .filter(|&(at, c)| at > 0 && (c == '.' || c == '['))
            .any(|(at, _)| wildcard_match(pattern, &path[..at]))
}

/// The pattern every element of an array of structs shares: `brick[3][7].hits`
/// becomes `brick[*][*].hits`; ranges (`b[2..4]`) and names stay.
pub fn any_index(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    let mut rest = path;
    while let Some(open) = rest.find('[') {
        out.push_str(&rest[..=open]);
        rest = &rest[open + 1..];
        match rest.find(']') {
            Some(close) if close > 0 && rest[..close].bytes().all(|b| b.is_ascii_digit()) => {
                out.push('*');
                rest = &rest[close..];
            }
            _ => {}
        }
    }
    out.push_str(rest);
    out
}

/// `name` as a shell word: quoted when it holds characters a shell would
/// expand (`'enemies[*].hp'`).
pub fn shell_word(name: &str) -> String {
    if name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | '/' | ':'))
    {
        name.to_owned()
    } else {
        format!("'{}'", name.replace('\'', "'\\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards() {
        assert!(wildcard_match("*~", "logic.c~"));
        assert!(wildcard_match(".*.sw?", ".logic.c.swp"));
        assert!(wildcard_match("sed??????", "sedAb12xZ"));
        assert!(!wildcard_match("sed??????", "sed.c"));
        assert!(wildcard_match("*___jb_tmp___", "logic.c___jb_tmp___"));
        assert!(!wildcard_match("*.o", "logic.c"));
        assert!(wildcard_match("a*b*c", "aXXbYYc"));
        assert!(!wildcard_match("a*b*c", "aXXbYY"));
        assert!(
            wildcard_match("sed??????", "sedéàüöäß"),
            "a character, not a byte"
        );
        assert!(wildcard_match("*~", "ünïcödé.c~"));
    }

    #[test]
    fn brackets_are_plain_characters() {
        assert!(wildcard_match("enemies[*].hp", "enemies[12].hp"));
        assert!(!wildcard_match("enemies[*].hp", "enemies[12].x"));
        assert!(wildcard_match("grid", "grid"));
        assert!(!wildcard_match("grid", "grid2"));
    }

    #[test]
    fn element_indices_become_wildcards() {
        assert_eq!(any_index("brick[3][17].hits"), "brick[*][*].hits");
        assert_eq!(any_index("b[2..4]"), "b[2..4]");
        assert_eq!(any_index("score"), "score");
        assert_eq!(any_index("a[1].b[*][2]"), "a[*].b[*][*]");
        assert_eq!(shell_word("bounces"), "bounces");
        assert_eq!(shell_word("enemies[*].hp"), "'enemies[*].hp'");
    }

    #[test]
    fn a_pattern_selects_what_lies_inside_what_it_names() {
        assert!(selects_field("enemies", "enemies[1].hp"));
        assert!(selects_field("enemies[1]", "enemies[1].hp"));
        assert!(!selects_field("enemies[2]", "enemies[1].hp"));
        assert!(selects_field("pos", "pos.x"));
        assert!(!selects_field("po", "pos.x"));
        assert!(selects_field("*", "anything[3].at.all"));
    }
}
