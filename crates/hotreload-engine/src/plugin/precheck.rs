//! Stage four: look at a library's bytes before any of its code can run.
//!
//! `dlopen` maps segments straight from the file, walks the dynamic
//! section, the hash and symbol tables, the version records and the
//! relocations as they are, and runs constructors: a garbage, truncated or
//! corrupt file can crash the host inside the loader, where no guard can
//! catch it. So the bytes are checked here, on the very bytes that are then
//! written to the shadow copy and loaded: an ELF shared object for this
//! machine, with everything the loader will read in order (see
//! [`crate::plugin::elf`]), exporting `logic_get_api`.

use object::{Object, ObjectSymbol};

use crate::outcome::Rejection;
use crate::plugin::elf::{self, Image};
use hotreload_abi::GET_API_NAME;

/// On success, what the host needs to load the library: among others the
/// address ranges its segments will occupy, as linked (relative to its load
/// base), to recognise a pointer into the library later without reading
/// `/proc/self/maps`, and where its entry points are.
pub fn precheck(bytes: &[u8]) -> Result<Image, Rejection> {
    let image = validated(bytes, None)?;
    if image.get_api.is_none() {
        return Err(missing_entry(bytes, GET_API_NAME, &image.get_api_refused));
    }
    Ok(image)
}

/// [`precheck`] for a host's own function table (`crate::embed`): the
/// library must export `entry` instead of `logic_get_api`.
pub fn precheck_entry(bytes: &[u8], entry: &str) -> Result<Image, Rejection> {
    let image = validated(bytes, Some(entry))?;
    if image.entry.is_none() {
        return Err(missing_entry(bytes, entry, &image.entry_refused));
    }
    Ok(image)
}

fn validated(bytes: &[u8], entry: Option<&str>) -> Result<Image, Rejection> {
    if !bytes.starts_with(b"\x7fELF") {
        return Err(Rejection::NotLoadable(format!(
            "expected an ELF shared object, found {}",
            describe(bytes)
        )));
    }
    elf::validate_with_entry(bytes, entry).map_err(Rejection::NotLoadable)
}

/// The rejection of a library that does not export `name`, saying what it
/// has instead.
fn missing_entry(bytes: &[u8], name: &str, refused: &Option<String>) -> Rejection {
    let found = match refused {
        Some(why) => why.clone(),
        // The full symbol table, when not stripped, knows the functions
        // that are not exported.
        None if object::File::parse(bytes).is_ok_and(|file| {
            file.symbols()
                .any(|s| s.name() == Ok(name) && s.is_definition())
        }) =>
        {
            "it defined but not exported (static, or hidden visibility?)".to_owned()
        }
        None => "no such symbol".to_owned(),
    };
    Rejection::MissingEntryPoint(format!(
        "missing entry point: expected an exported function {name}, found {found}"
    ))
}

/// A few words on what a non-ELF file looks like, for the rejection message.
fn describe(bytes: &[u8]) -> String {
    if bytes.is_empty() {
        return "an empty file".into();
    }
    let head = &bytes[..bytes.len().min(16)];
    if head
        .iter()
        .all(|b| b.is_ascii_graphic() || *b == b' ' || b.is_ascii_whitespace())
    {
        let text: String = String::from_utf8_lossy(head)
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        format!(
            "{} bytes of text starting {:?}",
            bytes.len(),
            text.trim_end()
        )
    } else {
        let hex: Vec<String> = head.iter().take(8).map(|b| format!("{b:02x}")).collect();
        format!("{} bytes starting {}", bytes.len(), hex.join(" "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_is_described() {
        let err = precheck(b"hello world, not a library").unwrap_err();
        assert_eq!(err.exit_code(), 11);
        let msg = err.to_string();
        assert!(
            msg.contains("expected an ELF shared object")
                && msg.contains("text starting \"hello world, not"),
            "{msg}"
        );
        assert!(
            precheck(b"")
                .unwrap_err()
                .to_string()
                .contains("an empty file")
        );
        assert!(
            precheck(&[0u8, 1, 2, 3, 200])
                .unwrap_err()
                .to_string()
                .contains("5 bytes starting 00 01 02 03 c8")
        );
    }

    #[test]
    fn truncated_headers_are_refused() {
        let err = precheck(b"\x7fELF\x02\x01\x01").unwrap_err();
        assert!(
            err.to_string()
                .contains("truncated: expected the 64-byte ELF header"),
            "{err}"
        );
    }

    /// The test binary itself is an ELF executable (or a PIE, which is also
    /// ET_DYN but exports no `logic_get_api`): either way it is refused, with a
    /// reason, and nothing panics on real, large ELF input.
    #[test]
    fn the_test_executable_is_not_a_plugin() {
        let me = std::fs::read(std::env::current_exe().expect("exe")).expect("read self");
        assert!(precheck(&me).is_err());
        let truncated = &me[..me.len() / 2];
        assert!(precheck(truncated).is_err());
    }
}
