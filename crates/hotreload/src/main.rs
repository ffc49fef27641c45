//! `hotreload`: the command-line server. A thin layer over
//! [`hotreload_engine`]: parse flags, start the engine, print its events as
//! lines the moment they happen, turn signals into stop commands, and exit
//! with the engine's code.

mod cli;
mod ctl;
mod render;
mod replay;
mod signals;

use std::io::Write;
use std::process::ExitCode;

use std::sync::Arc;

use clap::Parser;
use hotreload_engine::control::hub::Hub;
use hotreload_engine::control::server::{self, StartError, Wiring};
use hotreload_engine::{Engine, ForcedSave, console, exit_code};

fn main() -> ExitCode {
    // A trial run of a new build is this same executable in probe mode.
    hotreload_engine::run_probe_if_requested();
    if std::env::args_os().nth(1).is_some_and(|a| a == "ctl") {
        return ctl::main(std::env::args_os().skip(2));
    }
    let args = cli::Args::parse();
    if let (Some(file), Some(lib)) = (&args.replay, &args.lib) {
        return replay::main(file, lib, args.tick_timeout_ms);
    }
    let config = match args.to_config() {
        Ok(c) => c,
        Err(why) => return fail(exit_code::USAGE, &why),
    };
    line_buffer_c_stdout();
    // Before any thread exists: every thread inherits the mask.
    if let Err(why) = signals::block() {
        return fail(exit_code::HOST_ERROR, &why);
    }
    // Before plugin code can close or redirect the standard descriptors:
    // the host keeps its own copies.
    console::host_stdout();
    if let Err(why) = console::capture_stderr() {
        return fail(exit_code::HOST_ERROR, &why);
    }
    // The control socket is bound before anything starts: a second server
    // in this folder is refused before it builds or loads anything.
    let bound = if args.no_control {
        None
    } else {
        let path = args.control.clone().unwrap_or_else(|| {
            hotreload_control::socket_path(&std::env::current_dir().unwrap_or_default())
        });
        match server::bind(&path) {
            Ok(bound) => Some(bound),
            Err(StartError::Taken { path, pid }) => {
                let who = pid.map_or("another hotreload server".to_owned(), |p| {
                    format!("another hotreload server (pid {p})")
                });
                return fail(
                    exit_code::CONTROL_TAKEN,
                    &format!(
                        "{who} is running with the control socket {}; stop it, or start this one with --control PATH or --no-control",
                        path.display()
                    ),
                );
            }
            Err(StartError::Other(why)) => return fail(exit_code::HOST_ERROR, &why),
        }
    };
    let json = args.events == "json";
    if json && let Err(why) = console::plugin_stdout_to_stderr() {
        return fail(exit_code::HOST_ERROR, &why);
    }
    let hub = Arc::new(Hub::new());
    let renderer = render::Renderer::new();
    let published = Arc::clone(&hub);
    let engine = match Engine::start(config, move |event| {
        let text = renderer.render(&event);
        // Every event goes on the channel, those without a line of their
        // own (build_started, first_tick) too.
        let line = published.publish(event.kind(), text.trim_end_matches('\n'), &event.fields());
        // A closed stdout is handled by `stop_when_stdout_closes`.
        let _ = match (json, line) {
            (true, Some(line)) => print(&line),
            _ if text.is_empty() => Ok(()),
            _ => print(&text),
        };
    }) {
        Ok(engine) => engine,
        Err(why) => return fail(why.code, &why.message),
    };
    let _control = match bound {
        Some(bound) => {
            let said = Arc::clone(&hub);
            let wiring = Wiring {
                commander: engine.commander(),
                door: engine.state_door(),
                board: engine.status(),
                hub: Arc::clone(&hub),
                say: Arc::new(move |text: String| {
                    let line = format!("[control] {text}\n");
                    let _ = print(&line);
                    said.publish("control_notice", line.trim_end(), &serde_json::json!({}));
                }),
            };
            match bound.serve(wiring) {
                Ok(server) => Some(server),
                Err(StartError::Other(why)) => {
                    let _ = print(&format!("[control] no control socket: {why}\n"));
                    None
                }
                Err(StartError::Taken { path, .. }) => {
                    let _ = print(&format!(
                        "[control] no control socket: {} is taken\n",
                        path.display()
                    ));
                    None
                }
            }
        }
        None => None,
    };
    if let Err(why) = signals::stop_when_stdout_closes(engine.commander()) {
        return fail(exit_code::HOST_ERROR, &why);
    }
    let saver = engine.commander();
    let forced = move |signal: nix::sys::signal::Signal| {
        let saved = match saver.save_before_forced_exit() {
            ForcedSave::Saved { path, tick } => {
                format!("saved the state as of tick {tick} to {}", path.display())
            }
            ForcedSave::Failed { path, why } => {
                format!(
                    "cannot save the state to {}: {why}; it is lost",
                    path.display()
                )
            }
            ForcedSave::AlreadySaved => "the state was already saved".to_owned(),
            ForcedSave::NothingToSave => {
                "no version ever ran, so there is no state to save".to_owned()
            }
            ForcedSave::NotAsked => "no --state-file, so the state is not saved".to_owned(),
        };
        if let Some(why) = saver.remove_private_files() {
            let _ = print(&format!("[server] {why}\n"));
        }
        let code = 128 + signal as i32;
        let _ = print(&format!(
            "[exit] code={code} (second {signal}: {saved}; exiting without waiting for plugin code to return)\n"
        ));
        console::finish();
        std::process::exit(code);
    };
    if let Err(why) = signals::forward_to(engine.commander(), forced) {
        return fail(exit_code::HOST_ERROR, &why);
    }
    let code = engine.join();
    console::finish();
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

/// Writes each line with its own `write`, so that a plugin printing from the
/// tick thread can never split one of the host's lines: a write of up to
/// PIPE_BUF (4 KiB) bytes to a pipe is atomic, a longer one (a build's whole
/// output) is not.
/// Fails only when stdout is gone.
fn print(text: &str) -> std::io::Result<()> {
    let mut out = console::host_stdout();
    for line in text.split_inclusive('\n') {
        out.write_all(line.as_bytes())?;
        out.flush()?;
    }
    Ok(())
}

fn fail(code: i32, why: &str) -> ExitCode {
    let _ = writeln!(console::host_stderr(), "hotreload: error: {why}");
    console::finish();
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

/// Plugins print with C stdio, which fully buffers a pipe: their lines would
/// come out in 4 KiB lumps, long after the host's. Line buffering makes each
/// `printf` line appear when it is written, whole.
fn line_buffer_c_stdout() {
    unsafe extern "C" {
        // glibc's `FILE* stdout`.
        static mut stdout: *mut libc::FILE;
    }
    // SAFETY: called before any thread exists or anything is written to C's
    // stdout, which is when `setvbuf` may be called; `stdout` is glibc's
    // stream, read once here.
    unsafe {
        libc::setvbuf(stdout, std::ptr::null_mut(), libc::_IOLBF, 0);
    }
}
