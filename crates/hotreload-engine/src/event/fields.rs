//! Each event's facts as JSON, for the control channel and `--events
//! json`: the numbers and names a script would otherwise have to pick out
//! of the printed line (`{"version": 3, "call": "tick", "tick": 812}`).
//! The printed line goes alongside as `text`; an event with nothing beyond
//! its line has no fields.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};

use super::{Event, Recovery, StateMoment};

fn ms(d: &Duration) -> f64 {
    // Microsecond precision is all a log needs, and keeps the JSON short.
    (d.as_secs_f64() * 1e6).round() / 1e3
}

fn paths(ps: &[PathBuf]) -> Vec<String> {
    ps.iter().map(|p| p.display().to_string()).collect()
}

impl Event {
    /// What this event says, as a JSON object (empty for events whose line
    /// says everything: notices, which are sentences).
    pub fn fields(&self) -> Value {
        match self {
            Event::Running { watch_mode } => {
                json!({"watch_mode": format!("{watch_mode:?}").to_lowercase()})
            }
            Event::ChangeDetected { paths: p, rescan } => {
                json!({"paths": paths(p), "rescan": rescan})
            }
            Event::BuildSkipped { paths: p } | Event::BuildSuperseded { paths: p } => {
                json!({"paths": paths(p)})
            }
            Event::BuildSucceeded { duration, .. } => json!({"duration_ms": ms(duration)}),
            Event::BuildFailed(f) => json!({
                "duration_ms": ms(&f.duration),
                "status": f.status,
                "first_error": f.first_error,
                "keeping": f.keeping,
            }),
            Event::BuildCancelled { ran } => json!({"ran_ms": ms(ran)}),
            Event::BuildStarted { ahead } => json!({"ahead_ms": ahead.as_ref().map(ms)}),
            Event::Unchanged { version } => json!({"version": version}),
            Event::SwapSkipped { version, by } => json!({"version": version, "by": by}),
            Event::Swapped(s) => json!({
                "version": s.version,
                "lib": s.lib_name,
                "api_version": s.api_version,
                "since_build_exit_ms": ms(&s.since_build_exit),
                "first_load": s.first_load,
                "migrated": s.migrated,
                "migration_pages_at_swap": s.migration_pages_at_swap,
                "worker_pid": s.worker_pid,
            }),
            Event::Rejected {
                reason, keeping, ..
            } => json!({
                "reason": reason.to_string(),
                "exit_code": reason.exit_code(),
                "keeping": keeping,
            }),
            Event::State(r) => json!({
                "version": r.version,
                "tick": r.tick,
                "size": r.size,
                "paused": r.paused,
                "moment": moment(r.moment),
                "fields": r.fields,
                "values": r.values,
            }),
            Event::Fault(f) => {
                let mut out = json!({
                    "version": f.version,
                    "call": f.call,
                    "tick": f.tick,
                    "cause": f.cause,
                    "symbol": f.symbol,
                });
                out["recovery"] = recovery(&f.recovery);
                out
            }
            Event::StateSaved { path, tick } | Event::SaveRecovered { path, tick } => {
                json!({"path": path.display().to_string(), "tick": tick})
            }
            Event::SaveFailed {
                path,
                why,
                at_exit,
                rescued_to,
            } => json!({
                "path": path.display().to_string(),
                "why": why,
                "at_exit": at_exit,
                "rescued_to": rescued_to.as_ref().map(|p| p.display().to_string()),
            }),
            Event::Dangling {
                version,
                offset,
                field,
            } => json!({"version": version, "offset": offset, "field": field}),
            Event::FieldSet {
                path,
                old,
                new,
                tick,
                undone,
            } => json!({"path": path, "old": old, "new": new, "tick": tick, "undone": undone}),
            Event::Rewound {
                from,
                to,
                version,
                looping,
            } => json!({
                "from": from,
                "to": to,
                "version": version,
                "loop": looping.map(|l| json!({"from": l.from, "to": l.to, "pass": l.pass})),
            }),
            Event::LoopSet { window, version } => json!({
                "window": window.map(|(from, to)| json!({"from": from, "to": to})),
                "version": version,
            }),
            Event::Replayed(r) => r.fields(),
            Event::RolledBackOnRequest {
                from,
                to,
                tick,
                carried,
                reloaded,
                from_kept,
                from_faulted,
                on_request,
            } => json!({
                "from": from,
                "to": to,
                "tick": tick,
                "carried": carried,
                "reloaded": reloaded,
                "from_kept": from_kept,
                "from_faulted": from_faulted,
                "on_request": on_request,
            }),
            Event::Paused { tick, running } => json!({"tick": tick, "running": running}),
            Event::Resumed { tick } => json!({"tick": tick}),
            Event::Stepped { ticks, tick } => json!({"ticks": ticks, "tick": tick}),
            Event::FirstTick {
                version,
                since_build_exit,
            } => json!({"version": version, "since_build_exit_ms": ms(since_build_exit)}),
            Event::KeptWorkerDied {
                version,
                pid,
                cause,
            } => json!({"version": version, "pid": pid, "cause": cause}),
            Event::WorkerStopped { version, pid } | Event::WorkerStoppedAtExit { version, pid } => {
                json!({"version": version, "pid": pid})
            }
            Event::PluginThreadStopped {
                tid,
                version,
                cause,
                exited,
            } => json!({"tid": tid, "version": version, "cause": cause, "exited": exited}),
            Event::KeptForThreads {
                version,
                tids,
                count,
            } => json!({"version": version, "tids": tids, "count": count}),
            Event::Stalled { behind, skipped } => {
                json!({"behind_ms": ms(behind), "skipped": skipped})
            }
            Event::TickStats(t) => json!({
                "ticks": t.ticks,
                "period_ms": ms(&t.period),
                "elapsed_ms": ms(&t.elapsed),
                "max_late_ms": ms(&t.max_late),
                "skipped": t.skipped,
            }),
            Event::Stopping { reason } => json!({"reason": match reason {
                crate::command::StopReason::Signal(n) => format!("signal {n}"),
                crate::command::StopReason::Requested => "requested".to_owned(),
            }}),
            Event::Exited { code } => json!({"code": code}),
            _ => json!({}),
        }
    }
}

fn moment(m: StateMoment) -> &'static str {
    match m {
        StateMoment::Initial => "initial",
        StateMoment::Restored => "restored",
        StateMoment::Preserved => "preserved",
        StateMoment::Migrated => "migrated",
        StateMoment::Periodic => "periodic",
        StateMoment::Requested => "on_request",
        StateMoment::Final => "final",
        StateMoment::Absent => "absent",
    }
}

fn recovery(r: &Recovery) -> Value {
    match r {
        Recovery::RolledBack {
            to,
            restored_to_tick,
            carried_back,
        } => json!({
            "kind": "rolled_back",
            "to": to,
            "restored_to_tick": restored_to_tick,
            "carried_back": carried_back,
        }),
        Recovery::Paused {
            restored_to_tick,
            cannot_roll_back,
            from_disk,
        } => json!({
            "kind": "paused",
            "restored_to_tick": restored_to_tick,
            "from_disk": from_disk,
            "cannot_roll_back": cannot_roll_back.as_ref().map(|(v, why)| json!({"version": v, "why": why})),
        }),
        Recovery::SwapWentAhead => json!({"kind": "swap_went_ahead"}),
        Recovery::Refused { keeping } => json!({"kind": "refused", "keeping": keeping}),
        Recovery::DescribeOff => json!({"kind": "describe_off"}),
        Recovery::Unloaded => json!({"kind": "unloaded"}),
        Recovery::Exiting { restored_to_tick } => {
            json!({"kind": "exiting", "restored_to_tick": restored_to_tick})
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fault_carries_its_version_call_tick_and_recovery() {
        let event = Event::Fault(crate::event::FaultReport {
            version: 3,
            call: "tick",
            tick: 812,
            cause: "SIGSEGV (address not mapped) at 0x0".into(),
            symbol: Some("counter_tick".into()),
            recovery: Recovery::RolledBack {
                to: 2,
                restored_to_tick: Some(811),
                carried_back: None,
            },
        });
        let f = event.fields();
        assert_eq!(f["version"], 3);
        assert_eq!(f["call"], "tick");
        assert_eq!(f["tick"], 812);
        assert_eq!(f["recovery"]["kind"], "rolled_back");
        assert_eq!(f["recovery"]["to"], 2);
        assert_eq!(f["recovery"]["restored_to_tick"], 811);
    }

    #[test]
    fn a_notice_has_no_fields() {
        assert_eq!(Event::ServerNotice("x".into()).fields(), json!({}));
    }
}
