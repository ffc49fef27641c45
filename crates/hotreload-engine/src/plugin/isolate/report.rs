//! The worker's one report after loading a build: what the host's own
//! loader would have learned (the seed table's version and size, the
//! extended table's state version, hooks and schema, where the library
//! landed), or why the build was refused, with the same rejection the host
//! would have made.

use std::sync::Arc;

use crate::layout::Layout;
use crate::outcome::Rejection;
use crate::state::persist;

use super::wire::{Reader, Writer};

/// Hook bits in [`Loaded::hooks`].
pub const HAS_INIT: u8 = 1;
pub const HAS_ON_RELOAD: u8 = 2;
pub const HAS_ON_UNLOAD: u8 = 4;
pub const HAS_MIGRATE: u8 = 8;
pub const HAS_DESCRIBE: u8 = 16;
/// The extended table's `tick`, which takes the host context.
pub const HAS_TICK: u8 = 32;

/// A build the worker loaded and checked.
#[derive(Clone, Debug, PartialEq)]
pub struct Loaded {
    pub api_version: i32,
    pub state_size: usize,
    /// Whether the extended table is there.
    pub ext: bool,
    pub state_version: u32,
    pub hooks: u8,
    pub schema: Option<Arc<Layout>>,
    /// Where the plugin's tables live, as linked.
    pub table_offsets: Vec<u64>,
    /// Where the library's segments are in the worker.
    pub ranges: Vec<(usize, usize)>,
}

const LOADED: u8 = 1;
const REFUSED: u8 = 2;

pub fn encode(result: &Result<Loaded, Rejection>) -> Vec<u8> {
    let mut w = Writer::default();
    match result {
        Ok(l) => {
            w.u8(LOADED)
                .i32(l.api_version)
                .u64(l.state_size as u64)
                .u8(u8::from(l.ext))
                .u32(l.state_version)
                .u8(l.hooks);
            match l.schema.as_deref().map(persist::encode_layout_only) {
                Some(Ok(bytes)) => w.u8(1).bytes(&bytes),
                _ => w.u8(0),
            };
            w.u32(l.table_offsets.len() as u32);
            for t in &l.table_offsets {
                w.u64(*t);
            }
            w.u32(l.ranges.len() as u32);
            for (start, end) in &l.ranges {
                w.u64(*start as u64).u64(*end as u64);
            }
        }
        Err(r) => {
            w.u8(REFUSED);
            encode_rejection(&mut w, r);
        }
    }
    w.0
}

pub fn decode(bytes: &[u8]) -> Result<Result<Loaded, Rejection>, String> {
    let mut r = Reader::new(bytes);
    match r.u8()? {
        LOADED => {
            let api_version = r.i32()?;
            let state_size = usize::try_from(r.u64()?).map_err(|e| e.to_string())?;
            let ext = r.u8()? != 0;
            let state_version = r.u32()?;
            let hooks = r.u8()?;
            let schema = match r.u8()? {
                0 => None,
                _ => Some(Arc::new(persist::decode_layout_only(r.bytes()?)?)),
            };
            if let Some(schema) = &schema
                && schema.size != state_size
            {
                return Err(format!(
                    "the schema describes {} bytes, but state_size is {state_size}",
                    schema.size
                ));
            }
            let n = count(&mut r, "tables", MAX_TABLES)?;
            let table_offsets = (0..n).map(|_| r.u64()).collect::<Result<_, _>>()?;
            let n = count(&mut r, "mapped ranges", MAX_RANGES)?;
            let ranges = (0..n)
                .map(|_| Ok((r.u64()? as usize, r.u64()? as usize)))
                .collect::<Result<_, String>>()?;
            Ok(Ok(Loaded {
                api_version,
                state_size,
                ext,
                state_version,
                hooks,
                schema,
                table_offsets,
                ranges,
            }))
        }
        REFUSED => Ok(Err(decode_rejection(&mut r)?)),
        other => Err(format!(
            "expected a load report, found a message of kind {other}"
        )),
    }
}

/// More than a library has: a report that claims more is garbled.
const MAX_TABLES: usize = 64;
const MAX_RANGES: usize = 256;

fn count(r: &mut Reader<'_>, what: &str, max: usize) -> Result<usize, String> {
    let n = r.u32()? as usize;
    if n > max {
        return Err(format!(
            "expected at most {max} {what} in the report, found {n}"
        ));
    }
    Ok(n)
}

fn encode_rejection(w: &mut Writer, r: &Rejection) {
    match r {
        Rejection::NotLoadable(t) => w.u8(1).bytes(t.as_bytes()),
        Rejection::MissingEntryPoint(t) => w.u8(2).bytes(t.as_bytes()),
        Rejection::ApiVersion { expected, found } => w.u8(3).i32(*expected).i32(*found),
        Rejection::NullTable => w.u8(4),
        Rejection::NullFunctions(names) => {
            w.u8(5).u32(names.len() as u32);
            for n in names {
                w.bytes(n.as_bytes());
            }
            w
        }
        Rejection::Faulted(t) => w.u8(6).bytes(t.as_bytes()),
        Rejection::PluginCrate(t) => w.u8(7).bytes(t.as_bytes()),
        // The rest are decided by the host, from what the worker reports.
        other => w.u8(1).bytes(other.to_string().as_bytes()),
    };
}

fn decode_rejection(r: &mut Reader<'_>) -> Result<Rejection, String> {
    Ok(match r.u8()? {
        1 => Rejection::NotLoadable(r.string()?),
        2 => Rejection::MissingEntryPoint(r.string()?),
        3 => Rejection::ApiVersion {
            expected: r.i32()?,
            found: r.i32()?,
        },
        4 => Rejection::NullTable,
        5 => {
            let n = r.u32()?.min(3);
            let mut names = Vec::new();
            for _ in 0..n {
                names.push(match r.string()?.as_str() {
                    "init" => "init",
                    "tick" => "tick",
                    _ => "shutdown",
                });
            }
            Rejection::NullFunctions(names)
        }
        6 => Rejection::Faulted(r.string()?),
        7 => Rejection::PluginCrate(r.string()?),
        other => return Err(format!("expected a known rejection, found kind {other}")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::{Field, Scalar, Source};

    #[test]
    fn reports_round_trip() {
        let schema = Layout {
            size: 8,
            fields: vec![Field::new(
                "score",
                0,
                Scalar::Int {
                    signed: true,
                    bytes: 4,
                },
                1,
            )],
            source: Source::Schema,
        };
        let loaded = Loaded {
            api_version: 1,
            state_size: 8,
            ext: true,
            state_version: 3,
            hooks: HAS_INIT | HAS_DESCRIBE,
            schema: Some(Arc::new(schema)),
            table_offsets: vec![0x4000],
            ranges: vec![(0x1000, 0x5000)],
        };
        let mut wrong = loaded.clone();
        wrong.state_size = 16;
        assert_eq!(decode(&encode(&Ok(loaded.clone()))), Ok(Ok(loaded)));
        for r in [
            Rejection::NotLoadable("x".into()),
            Rejection::ApiVersion {
                expected: 1,
                found: 2,
            },
            Rejection::NullFunctions(vec!["tick"]),
            Rejection::Faulted("boom".into()),
            Rejection::PluginCrate("built with hotreload-plugin ABI 2".into()),
        ] {
            assert_eq!(decode(&encode(&Err(r.clone()))), Ok(Err(r)));
        }
        assert!(
            decode(&encode(&Ok(wrong))).is_err(),
            "a schema of another size"
        );
        assert!(decode(&[9]).is_err());
        assert!(decode(&[]).is_err());
    }
}
