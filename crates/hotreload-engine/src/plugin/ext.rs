//! The extended ABI: the optional `logic_get_api_ext` table, read and
//! checked at load.
//!
//! A plugin may declare its state's fields (a schema), a state version, and
//! hooks. The table says how big it is, so a plugin built against a newer
//! header (a longer table) loads on this host, and one built against an older
//! header (a shorter table) gets NULL for what it lacks. Field names are
//! copied out of the library at load: they must not be read again after the
//! library goes.

use std::ffi::CStr;
use std::sync::Arc;

use hotreload_abi::{
    DescribeFn, EXT_VERSION, FIELD_ROW_SHIFT, FIELD_TRANSIENT, FieldDesc, HookFn, HostContext,
    LayoutHash, LogicApiExt, MigrateFn, TickHostFn, field_type,
};

use crate::event::{Event, EventSink};

use crate::layout::{Field, Layout, Scalar, Shown, Source};
use crate::outcome::Rejection;

/// The checked extended table.
#[derive(Clone, Debug)]
pub struct Ext {
    pub state_version: u32,
    pub init: Option<HookFn>,
    pub on_reload: Option<HookFn>,
    pub on_unload: Option<HookFn>,
    pub migrate: Option<MigrateFn>,
    pub describe: Option<DescribeFn>,
    /// `tick` with the host context, in place of the basic table's.
    pub tick: Option<TickHostFn>,
    /// The declared schema, if any.
    pub schema: Option<Arc<Layout>>,
    /// The schema's entries as read, hashed the way a library built with
    /// the `hotreload-plugin` crate hashed them (see
    /// [`crate::plugin::record`]); size and alignment still to be fed.
    pub schema_hash: LayoutHash,
}

thread_local! {
    /// Where `host_log` sends plugin lines on this thread.
    static LOG_SINK: std::cell::RefCell<Option<EventSink>> = const { std::cell::RefCell::new(None) };
}

/// Sends what plugin code logs on this thread to `sink`, as
/// [`Event::PluginLog`]. Without it (a trial probe), lines go to stdout.
pub fn log_to(sink: EventSink) {
    LOG_SINK.with(|s| *s.borrow_mut() = Some(sink));
}

/// The context handed to `init` and the hooks.
pub fn host_context(seed: u64, tick: u64) -> HostContext {
    HostContext {
        size: std::mem::size_of::<HostContext>() as u32,
        reserved: 0,
        seed,
        tick,
        log: Some(host_log),
        input: std::ptr::null(),
        input_len: 0,
    }
}

/// The context handed to the extended table's `tick`: as for the hooks,
/// with the tick's `input`, which must outlive the call.
pub fn tick_context(seed: u64, tick: u64, input: &[u8]) -> HostContext {
    HostContext {
        input: if input.is_empty() {
            std::ptr::null()
        } else {
            input.as_ptr().cast()
        },
        input_len: input.len(),
        ..host_context(seed, tick)
    }
}

/// The host context's `log`: one `[plugin]` line, in order with the host's.
unsafe extern "C" fn host_log(message: *const std::ffi::c_char) {
    if message.is_null() {
        return;
    }
    // SAFETY: the ABI asks for a NUL-terminated string, valid for the call.
    let text = unsafe { CStr::from_ptr(message) }
        .to_string_lossy()
        .into_owned();
    LOG_SINK.with(|sink| match &*sink.borrow() {
        Some(sink) => sink(Event::PluginLog(text)),
        None => println!("[plugin] {text}"),
    });
}

/// The smallest table a plugin can hand over: `ext_version` and `size`.
const HEADER: usize = 8;
/// The longest field name read from a schema.
const MAX_NAME: usize = 1024;

/// Copies the plugin's table, no further than both this host and the plugin
/// know, zero-filling the rest. A table that cannot be read is refused.
///
/// # Safety
/// The library that handed `table` over must be loaded, nothing may write
/// the table meanwhile, and the calling thread must be prepared for plugin
/// calls (the reads go through the crash guard).
pub unsafe fn copy_table(table: *const LogicApiExt) -> Result<LogicApiExt, Rejection> {
    let unreadable = |fault: crate::guard::Fault| {
        Rejection::Faulted(format!(
            "logic_get_api_ext returned {table:p}, which cannot be read: {}",
            fault.describe()
        ))
    };
    // SAFETY: per this function's contract; a bad pointer faults inside
    // the guard.
    let header =
        unsafe { crate::guard::copy_from_plugin(table.cast(), HEADER) }.map_err(unreadable)?;
    let size = header
        .get(4..8)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u32::from_ne_bytes) as usize;
    if size < HEADER {
        return Err(Rejection::NotLoadable(format!(
            "logic_api_ext_t.size: expected at least {HEADER} bytes, found {size}"
        )));
    }
    let known = std::mem::size_of::<LogicApiExt>();
    // SAFETY: as above.
    let copied = unsafe { crate::guard::copy_from_plugin(table.cast(), size.min(known)) }
        .map_err(unreadable)?;
    let mut bytes = [0u8; std::mem::size_of::<LogicApiExt>()];
    if let Some(head) = bytes.get_mut(..copied.len()) {
        head.copy_from_slice(&copied);
    }
    // SAFETY: every bit pattern is valid for `LogicApiExt`'s integer and
    // nullable-function-pointer fields; zeroes mean NULL.
    Ok(unsafe {
        std::mem::transmute::<[u8; std::mem::size_of::<LogicApiExt>()], LogicApiExt>(bytes)
    })
}

/// Checks a copied table against the state's size, reading the schema.
///
/// # Safety
/// The library the table came from must be loaded, nothing may write its
/// schema meanwhile, and the calling thread must be prepared for plugin
/// calls: the schema and its names are read through the crash guard, so a
/// bad pointer in them is a rejection.
pub unsafe fn check(table: &LogicApiExt, state_size: usize) -> Result<Ext, Rejection> {
    if table.ext_version == 0 {
        return Err(Rejection::NotLoadable(format!(
            "logic_api_ext_t.ext_version: expected {EXT_VERSION} or later, found 0"
        )));
    }
    const MAX_FIELDS: u32 = 4096;
    let (schema, schema_hash) = if table.fields.is_null() || table.field_count == 0 {
        (None, LayoutHash::new())
    } else if table.field_count > MAX_FIELDS {
        return Err(schema_error(format!(
            "expected at most {MAX_FIELDS} fields, found {}",
            table.field_count
        )));
    } else {
        let len = table.field_count as usize * std::mem::size_of::<FieldDesc>();
        // SAFETY: per this function's contract; a bad pointer faults inside
        // the guard.
        let bytes = unsafe { crate::guard::copy_from_plugin(table.fields.cast(), len) }.map_err(
            |fault| {
                schema_error(format!(
                    "expected {} readable fields at {:p}, found {}",
                    table.field_count,
                    table.fields,
                    fault.describe()
                ))
            },
        )?;
        let descs: Vec<FieldDesc> = bytes
            .chunks_exact(std::mem::size_of::<FieldDesc>())
            // SAFETY: each chunk is a whole `hotreload_field_t`, read
            // unaligned; every bit pattern is a valid value of its fields.
            .map(|c| unsafe { c.as_ptr().cast::<FieldDesc>().read_unaligned() })
            .collect();
        // SAFETY: per this function's contract.
        let (layout, hash) = unsafe { schema_layout(&descs, state_size) }?;
        (Some(Arc::new(layout)), hash)
    };
    Ok(Ext {
        state_version: table.state_version,
        init: table.init,
        on_reload: table.on_reload,
        on_unload: table.on_unload,
        migrate: table.migrate,
        describe: table.describe,
        tick: table.tick,
        schema,
        schema_hash,
    })
}

fn schema_error(why: String) -> Rejection {
    Rejection::NotLoadable(format!("bad schema in logic_api_ext_t: {why}"))
}

/// # Safety
/// As for [`check`].
unsafe fn schema_layout(
    descs: &[FieldDesc],
    state_size: usize,
) -> Result<(Layout, LayoutHash), Rejection> {
    let mut fields = Vec::with_capacity(descs.len());
    let mut hash = LayoutHash::new();
    for (i, d) in descs.iter().enumerate() {
        if d.name.is_null() {
            return Err(schema_error(format!(
                "field {i}: expected a name, found NULL"
            )));
        }
        // SAFETY: per the contract; a bad pointer faults inside the guard.
        let name = match unsafe { crate::guard::string_from_plugin(d.name, MAX_NAME) } {
            Ok(Some(name)) => {
                hash = hash
                    .bytes(&name)
                    .field(d.field_type, d.flags, d.offset, d.count);
                String::from_utf8_lossy(&name).into_owned()
            }
            Ok(None) => {
                return Err(schema_error(format!(
                    "field {i}: expected a NUL-terminated name of at most {MAX_NAME} bytes, found a longer one"
                )));
            }
            Err(fault) => {
                return Err(schema_error(format!(
                    "field {i}: expected a readable name at {:p}, found {}",
                    d.name,
                    fault.describe()
                )));
            }
        };
        let (scalar, shown) = scalar_of(d.field_type).ok_or_else(|| {
            schema_error(format!(
                "field {name}: expected a HOTRELOAD_* type, found {:#x}",
                d.field_type
            ))
        })?;
        if d.count == 0 {
            return Err(schema_error(format!(
                "field {name}: expected a count of at least 1, found 0"
            )));
        }
        let row = (d.flags >> FIELD_ROW_SHIFT) as usize;
        let dims = match row {
            0 if d.count == 1 => Vec::new(),
            0 => vec![d.count],
            row if d.count % row == 0 => vec![d.count / row, row],
            row => {
                return Err(schema_error(format!(
                    "field {name}: expected a count that is a whole number of rows of {row}, \
                     found {}",
                    d.count
                )));
            }
        };
        fields.push(Field {
            transient: d.flags & FIELD_TRANSIENT != 0,
            shown,
            ..Field::array(name, d.offset, scalar, dims)
        });
    }
    let layout = Layout {
        size: state_size,
        fields,
        source: Source::Schema,
    };
    layout.validate().map_err(schema_error)?;
    let mut names: Vec<&str> = layout.fields.iter().map(|f| f.name.as_str()).collect();
    names.sort_unstable();
    if let Some(dup) = names.windows(2).find(|w| w[0] == w[1]) {
        return Err(schema_error(format!("field {} is declared twice", dup[0])));
    }
    Ok((layout, hash))
}

/// A schema type and how its values read.
fn scalar_of(t: u32) -> Option<(Scalar, Shown)> {
    use field_type::*;
    let scalar = match t {
        I8 | I16 | I32 | I64 => Scalar::Int {
            signed: true,
            bytes: (t & 0xff) as u8,
        },
        U8 | U16 | U32 | U64 => Scalar::Int {
            signed: false,
            bytes: (t & 0xff) as u8,
        },
        F32 | F64 => Scalar::Float {
            bytes: (t & 0xff) as u8,
        },
        BOOL => Scalar::Bool,
        PTR => Scalar::Pointer,
        CHAR => {
            return Some((
                Scalar::Int {
                    signed: true,
                    bytes: 1,
                },
                Shown::Text,
            ));
        }
        _ => return None,
    };
    Some((scalar, Shown::Number))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::c_char;

    fn desc(name: &'static [u8], t: u32, offset: usize, count: usize) -> FieldDesc {
        FieldDesc {
            name: name.as_ptr().cast::<c_char>(),
            field_type: t,
            flags: 0,
            offset,
            count,
        }
    }

    #[test]
    fn rows_and_text_come_from_the_schema() {
        let mut grid = desc(b"grid\0", field_type::U8, 0, 12);
        grid.flags = 4 << FIELD_ROW_SHIFT | FIELD_TRANSIENT;
        let name = desc(b"name\0", field_type::CHAR, 12, 4);
        let fields = [grid, name];
        // SAFETY: the names are NUL-terminated statics.
        let layout = unsafe { check(&table(&fields), 16) }
            .expect("valid")
            .schema
            .expect("schema");
        assert_eq!(layout.fields[0].dims, vec![3, 4]);
        assert!(layout.fields[0].transient);
        assert_eq!(layout.fields[1].shown, Shown::Text);
        let mut odd = desc(b"odd\0", field_type::U8, 0, 10);
        odd.flags = 4 << FIELD_ROW_SHIFT;
        // SAFETY: as above.
        let err = unsafe { check(&table(&[odd]), 16) }.expect_err("10 is no whole rows of 4");
        assert!(
            err.to_string()
                .contains("whole number of rows of 4, found 10"),
            "{err}"
        );
    }

    fn table(fields: &[FieldDesc]) -> LogicApiExt {
        LogicApiExt {
            ext_version: 1,
            size: std::mem::size_of::<LogicApiExt>() as u32,
            state_version: 3,
            field_count: fields.len() as u32,
            fields: fields.as_ptr(),
            init: None,
            on_reload: None,
            on_unload: None,
            migrate: None,
            describe: None,
            tick: None,
        }
    }

    #[test]
    fn a_schema_becomes_a_layout() {
        let fields = [
            desc(b"score\0", field_type::I32, 0, 1),
            desc(b"pos\0", field_type::F32, 4, 2),
        ];
        // SAFETY: the names are NUL-terminated statics.
        let ext = unsafe { check(&table(&fields), 12) }.expect("valid");
        let layout = ext.schema.expect("schema");
        assert_eq!(ext.state_version, 3);
        assert_eq!(layout.fields[1].name, "pos");
        assert_eq!(layout.fields[1].count, 2);
        assert_eq!(layout.fields[1].scalar, Scalar::Float { bytes: 4 });
    }

    #[test]
    fn bad_schemas_say_what_is_wrong() {
        let cases: [(&[FieldDesc], &str); 4] = [
            (
                &[desc(b"a\0", 0x999, 0, 1)],
                "expected a HOTRELOAD_* type, found 0x999",
            ),
            (
                &[desc(b"a\0", field_type::I64, 8, 1)],
                "past the 12-byte state",
            ),
            (
                &[
                    desc(b"a\0", field_type::I32, 0, 1),
                    desc(b"a\0", field_type::I32, 4, 1),
                ],
                "declared twice",
            ),
            (
                &[desc(b"a\0", field_type::I32, 0, 0)],
                "count of at least 1",
            ),
        ];
        for (fields, expected) in cases {
            // SAFETY: the names are NUL-terminated statics.
            let err = unsafe { check(&table(fields), 12) }
                .expect_err(expected)
                .to_string();
            assert!(err.contains(expected), "{err}");
        }
    }

    #[test]
    fn a_shorter_table_reads_as_null_hooks() {
        let mut t = table(&[]);
        t.on_reload = Some(noop);
        t.size = 24; // a plugin built before `init` and the hooks existed
        // SAFETY: `t` is a full table; only its first 24 bytes are claimed.
        let copied = unsafe { copy_table(&t) }.expect("copy");
        assert!(copied.on_reload.is_none());
        assert_eq!(copied.state_version, 3);
    }

    unsafe extern "C" fn noop(_: *mut std::ffi::c_void, _: *const hotreload_abi::HostContext) {}
}
