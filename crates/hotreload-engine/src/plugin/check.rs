//! Stage six: the ABI guard. A table is accepted only if it is the version
//! this host speaks, fits the state the host owns, and has every function.
//! Each rejection says what was expected and what was found.

use hotreload_abi::{API_VERSION, InitFn, LogicApi, ShutdownFn, TickFn};

use crate::outcome::Rejection;

/// A table that passed every check: no NULL left to trip over.
#[derive(Clone, Copy, Debug)]
pub struct Api {
    pub api_version: i32,
    pub state_size: usize,
    pub init: InitFn,
    pub tick: TickFn,
    pub shutdown: ShutdownFn,
}

/// `state_size` is `None` until a first version has fixed the state's size.
pub fn check(table: &LogicApi, state_size: Option<usize>) -> Result<Api, Rejection> {
    if table.api_version != API_VERSION {
        return Err(Rejection::ApiVersion {
            expected: API_VERSION,
            found: table.api_version,
        });
    }
    let (Some(init), Some(tick), Some(shutdown)) = (table.init, table.tick, table.shutdown) else {
        let missing = [
            ("init", table.init.is_none()),
            ("tick", table.tick.is_none()),
            ("shutdown", table.shutdown.is_none()),
        ]
        .into_iter()
        .filter_map(|(name, null)| null.then_some(name))
        .collect();
        return Err(Rejection::NullFunctions(missing));
    };
    if let Some(expected) = state_size
        && table.state_size != expected
    {
        return Err(Rejection::StateSize {
            expected,
            found: table.state_size,
        });
    }
    Ok(Api {
        api_version: table.api_version,
        state_size: table.state_size,
        init,
        tick,
        shutdown,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::c_void;

    unsafe extern "C" fn nop(_: *mut c_void) {}
    unsafe extern "C" fn nop_tick(_: *mut c_void, _: f64) {}

    fn good() -> LogicApi {
        LogicApi {
            api_version: 1,
            state_size: 4,
            init: Some(nop),
            tick: Some(nop_tick),
            shutdown: Some(nop),
        }
    }

    #[test]
    fn accepts_a_complete_table() {
        assert!(check(&good(), None).is_ok());
        assert!(check(&good(), Some(4)).is_ok());
    }

    #[test]
    fn rejects_with_expected_and_found() {
        let t = LogicApi {
            api_version: 2,
            ..good()
        };
        assert_eq!(
            check(&t, None).unwrap_err(),
            Rejection::ApiVersion {
                expected: 1,
                found: 2
            }
        );
        assert_eq!(
            check(&good(), Some(8)).unwrap_err(),
            Rejection::StateSize {
                expected: 8,
                found: 4
            }
        );
        let t = LogicApi {
            tick: None,
            shutdown: None,
            ..good()
        };
        assert_eq!(
            check(&t, None).unwrap_err(),
            Rejection::NullFunctions(vec!["tick", "shutdown"])
        );
    }
}
