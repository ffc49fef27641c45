//! Stage four: look at a library's bytes before any of its code can run.
//!
//! `dlopen` runs constructors and maps segments straight from the file, so a
//! garbage or truncated file can crash the host inside the loader (a segment
//! past the end of the file raises SIGBUS when touched). Everything that can
//! be known from the bytes is checked here, on the very bytes that are then
//! written to the shadow copy and loaded: an ELF shared object for this
//! machine, every segment and section inside the file, and an exported
//! `logic_get_api`.

use object::{
    Architecture, Endianness, Object, ObjectKind, ObjectSection, ObjectSegment, ObjectSymbol,
};

use crate::outcome::Rejection;
use hotreload_abi::GET_API_NAME;

const HOST_ARCH: Architecture = if cfg!(target_arch = "x86_64") {
    Architecture::X86_64
} else if cfg!(target_arch = "aarch64") {
    Architecture::Aarch64
} else if cfg!(target_arch = "riscv64") {
    Architecture::Riscv64
} else {
    Architecture::Unknown
};

/// On success, the address ranges the library's segments will occupy, as
/// linked (relative to its load base): what the host needs to recognise a
/// pointer into the library later, without reading `/proc/self/maps`.
pub fn precheck(bytes: &[u8]) -> Result<Vec<(u64, u64)>, Rejection> {
    let not_loadable = |why: String| Rejection::NotLoadable(why);
    if !bytes.starts_with(b"\x7fELF") {
        return Err(not_loadable(format!(
            "expected an ELF shared object, found {}",
            describe(bytes)
        )));
    }
    let file = object::File::parse(bytes).map_err(|e| {
        not_loadable(format!(
            "malformed or truncated ELF ({} bytes): {e}",
            bytes.len()
        ))
    })?;
    if file.kind() != ObjectKind::Dynamic {
        return Err(not_loadable(format!(
            "expected a shared object (ET_DYN), found {} (was it linked with -shared?)",
            match file.kind() {
                ObjectKind::Relocatable => "a relocatable object file",
                ObjectKind::Executable => "an executable",
                ObjectKind::Core => "a core dump",
                _ => "an ELF file of unknown type",
            }
        )));
    }
    if file.architecture() != HOST_ARCH || file.is_64() != cfg!(target_pointer_width = "64") {
        return Err(not_loadable(format!(
            "expected a {}-bit {:?} library, found a {}-bit {:?} one",
            usize::BITS,
            HOST_ARCH,
            if file.is_64() { 64 } else { 32 },
            file.architecture()
        )));
    }
    let host_endian = if cfg!(target_endian = "little") {
        Endianness::Little
    } else {
        Endianness::Big
    };
    if file.endianness() != host_endian {
        return Err(not_loadable(format!(
            "expected {host_endian:?}-endian, found {:?}-endian",
            file.endianness()
        )));
    }
    let len = bytes.len() as u64;
    let mut spans = Vec::new();
    for segment in file.segments() {
        spans.push((
            segment.address(),
            segment.address().saturating_add(segment.size()),
        ));
        let (offset, size) = segment.file_range();
        if offset.checked_add(size).is_none_or(|end| end > len) {
            return Err(not_loadable(format!(
                "truncated: a segment needs bytes {offset}..{} but the file has {len}",
                offset.saturating_add(size)
            )));
        }
    }
    for section in file.sections() {
        if let Some((offset, size)) = section.file_range()
            && offset.checked_add(size).is_none_or(|end| end > len)
        {
            return Err(not_loadable(format!(
                "truncated: section {} needs bytes {offset}..{} but the file has {len}",
                section.name().unwrap_or("?"),
                offset.saturating_add(size)
            )));
        }
    }
    let exported = file
        .dynamic_symbols()
        .any(|s| s.name() == Ok(GET_API_NAME) && s.is_definition() && s.is_global());
    if !exported {
        let hidden = file
            .symbols()
            .any(|s| s.name() == Ok(GET_API_NAME) && s.is_definition());
        return Err(Rejection::MissingEntryPoint(format!(
            "missing entry point: expected an exported function {GET_API_NAME}, found {}",
            if hidden {
                "it defined but not exported (static, or hidden visibility?)"
            } else {
                "no such symbol"
            }
        )));
    }
    Ok(spans)
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
            err.to_string().contains("malformed or truncated ELF"),
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
