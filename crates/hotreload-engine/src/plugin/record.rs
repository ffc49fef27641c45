//! The record a library built with the Rust `hotreload-plugin` crate
//! exports (`hotreload_plugin_t hotreload_plugin`, see
//! [`hotreload_abi::PluginRecord`]): which version of that crate's ABI built
//! it, the layout hash of its state type, and, after a panic ended one of
//! its calls in an abort, the panic's message and place.
//!
//! At load, a record of another ABI version is refused before anything else
//! is asked of the library, and a layout hash that differs from the hash of
//! the schema the library hands over is refused too, naming both. At a
//! fault, the panic it recorded becomes the `[fault]` line's cause: in the
//! host, in an isolated worker and in a trial's probe alike (each reads
//! the record of the library it has mapped).

use hotreload_abi::{PANIC_LOCATION_MAX, PANIC_MESSAGE_MAX, PLUGIN_ABI, PluginRecord};

use crate::outcome::Rejection;
use crate::plugin::ext::Ext;

const HEADER: usize = 8;

/// Reads the record at `address` (in a library that is loaded), refusing
/// one of another ABI version.
///
/// # Safety
/// The library holding `address` must be loaded, and the calling thread
/// prepared for plugin calls (the reads go through the crash guard).
pub unsafe fn read(address: usize) -> Result<PluginRecord, Rejection> {
    let name = hotreload_abi::PLUGIN_RECORD_NAME;
    let unreadable = |fault: crate::guard::Fault| {
        Rejection::PluginCrate(format!(
            "{name} at {address:#x} cannot be read: {}",
            fault.describe()
        ))
    };
    // SAFETY: per this function's contract; a bad address faults inside
    // the guard.
    let header = unsafe { crate::guard::copy_from_plugin(address as *const _, HEADER) }
        .map_err(unreadable)?;
    let word = |at: usize| {
        header
            .get(at..at + 4)
            .and_then(|b| b.try_into().ok())
            .map_or(0, u32::from_ne_bytes)
    };
    let (size, abi) = (word(0) as usize, word(4));
    if abi != PLUGIN_ABI {
        return Err(Rejection::PluginCrate(format!(
            "built with the hotreload-plugin crate's ABI {abi} ({name}.plugin_abi), but this host \
             speaks ABI {PLUGIN_ABI}: expected {PLUGIN_ABI}, found {abi}; rebuild the plugin \
             against the hotreload-plugin of this host's version"
        )));
    }
    let known = std::mem::size_of::<PluginRecord>();
    if size < HEADER {
        return Err(Rejection::PluginCrate(format!(
            "{name}.size: expected at least {HEADER} bytes, found {size}"
        )));
    }
    // SAFETY: as above.
    let copied = unsafe { crate::guard::copy_from_plugin(address as *const _, size.min(known)) }
        .map_err(unreadable)?;
    let mut bytes = [0u8; std::mem::size_of::<PluginRecord>()];
    if let Some(head) = bytes.get_mut(..copied.len()) {
        head.copy_from_slice(&copied);
    }
    // SAFETY: every bit pattern is a valid `PluginRecord` (integers and
    // byte arrays); what the plugin's record lacks reads as zeroes.
    Ok(unsafe {
        std::mem::transmute::<[u8; std::mem::size_of::<PluginRecord>()], PluginRecord>(bytes)
    })
}

/// Refuses a record whose state size or layout hash is not what the
/// library's tables say: the seed table's `state_size`, and the hash of the
/// schema the extended table handed over.
pub fn check_layout(
    record: &PluginRecord,
    ext: Option<&Ext>,
    state_size: usize,
) -> Result<(), Rejection> {
    let name = hotreload_abi::PLUGIN_RECORD_NAME;
    if record.state_size != state_size as u64 {
        return Err(Rejection::PluginCrate(format!(
            "{name}.state_size: expected {state_size} bytes (logic_api_t.state_size), found {}",
            record.state_size
        )));
    }
    let Some(ext) = ext else {
        return Err(Rejection::PluginCrate(format!(
            "a library with {name} must export logic_get_api_ext (its schema), found none"
        )));
    };
    let fields = ext.schema.as_ref().map_or(0, |s| s.fields.len());
    let found = ext
        .schema_hash
        .finish(state_size, record.state_align as usize);
    if found != record.layout_hash {
        return Err(Rejection::PluginCrate(format!(
            "state layout hash mismatch: {name}.layout_hash says {:#018x}, but the schema \
             logic_get_api_ext hands over ({fields} fields, {state_size} bytes, aligned to {}) \
             hashes to {found:#018x}: the state type and its schema were not made together; \
             rebuild the plugin",
            record.layout_hash, record.state_align
        )));
    }
    Ok(())
}

/// The panic the record holds, as a fault line says it: `panic at
/// src/lib.rs:12:9: index out of bounds: …`. Control characters (a
/// message's newlines) are escaped, so the line stays one line.
pub fn panic_of(record: &PluginRecord) -> Option<String> {
    if record.panicked != 1 {
        return None;
    }
    let text = |bytes: &[u8], len: u32, max: usize| {
        let cut = bytes.get(..(len as usize).min(max)).unwrap_or_default();
        String::from_utf8_lossy(cut)
            .chars()
            .flat_map(|c| match c {
                c if c.is_control() => c.escape_default().collect::<Vec<_>>(),
                c => vec![c],
            })
            .collect::<String>()
    };
    Some(format!(
        "panic at {}: {}",
        text(&record.location, record.location_len, PANIC_LOCATION_MAX),
        text(&record.message, record.message_len, PANIC_MESSAGE_MAX)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> PluginRecord {
        PluginRecord {
            size: std::mem::size_of::<PluginRecord>() as u32,
            plugin_abi: PLUGIN_ABI,
            layout_hash: 0,
            state_size: 8,
            state_align: 8,
            panicked: 0,
            location_len: 0,
            message_len: 0,
            reserved: 0,
            location: [0; PANIC_LOCATION_MAX],
            message: [0; PANIC_MESSAGE_MAX],
        }
    }

    #[test]
    fn a_recorded_panic_reads_as_one_line() {
        let mut r = record();
        assert_eq!(panic_of(&r), None);
        r.panicked = 1;
        r.location[..8].copy_from_slice(b"lib.rs:3");
        r.location_len = 8;
        r.message[..6].copy_from_slice(b"two\nli");
        r.message_len = 6;
        assert_eq!(panic_of(&r).as_deref(), Some("panic at lib.rs:3: two\\nli"));
        // A length past its buffer is cut to it (the rest are NULs here).
        r.message_len = u32::MAX;
        let long = panic_of(&r).expect("a panic");
        assert_eq!(
            long.matches("\\u{0}").count(),
            PANIC_MESSAGE_MAX - 6,
            "{long}"
        );
    }

    #[test]
    fn a_layout_hash_that_is_not_the_schemas_is_refused_naming_both() {
        let mut r = record();
        let ext = Ext {
            state_version: 1,
            init: None,
            on_reload: None,
            on_unload: None,
            migrate: None,
            describe: None,
            tick: None,
            schema: None,
            schema_hash: hotreload_abi::LayoutHash::new(),
        };
        r.layout_hash = ext.schema_hash.finish(8, 8);
        assert!(check_layout(&r, Some(&ext), 8).is_ok());
        r.layout_hash = 0x1234;
        let why = check_layout(&r, Some(&ext), 8)
            .expect_err("mismatch")
            .to_string();
        assert!(
            why.contains("0x0000000000001234") && why.contains("hashes to 0x"),
            "{why}"
        );
        let why = check_layout(&r, Some(&ext), 16)
            .expect_err("size")
            .to_string();
        assert!(why.contains("expected 16 bytes"), "{why}");
    }
}
