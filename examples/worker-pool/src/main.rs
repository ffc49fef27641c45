//! An example host that embeds the engine with its own function table:
//! `--threads N` worker threads serve request lines on a loopback TCP port,
//! each answered by the plugin's `handle` (see `handler.c`). With `--watch
//! SRC --build CMD` the engine rebuilds the library whenever SRC changes
//! and swaps it in while the workers keep serving; a `reload` line on stdin
//! loads the library again (rebuilt by hand); `quit` (or the end of stdin)
//! stops.
//!
//! ```sh
//! cc -shared -fPIC -o libhandler.so examples/worker-pool/handler.c
//! cargo run -p worker-pool -- --lib libhandler.so --threads 8 \
//!     --watch examples/worker-pool/handler.c \
//!     --build "cc -shared -fPIC -o libhandler.so examples/worker-pool/handler.c"
//! # in another terminal:  nc 127.0.0.1 PORT   and type lines; edit handler.c
//! ```

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::ExitCode;

use hotreload_engine::embed::{
    CallError, Entered, Function, FunctionTable, Options, Plugin, Rebuild, TableHeader,
};

/// `worker_api_t` in handler.c.
#[repr(C)]
#[derive(Clone, Copy)]
struct WorkerApi {
    header: TableHeader,
    handle: Option<unsafe extern "C" fn(*const u8, usize, *mut u8, usize) -> isize>,
}

// SAFETY: `#[repr(C)]`, the header first, then a nullable function pointer.
unsafe impl FunctionTable for WorkerApi {
    const ENTRY: &'static str = "worker_get_api";
    const VERSION: u32 = 1;
    fn functions(&self) -> Vec<Function> {
        vec![Function {
            name: "handle",
            address: self.handle.map_or(0, |f| f as usize),
            required: true,
        }]
    }
}

/// The table's calls, made safe: references in, a checked length out.
trait Handler {
    fn handle(&self, request: &[u8], response: &mut [u8]) -> Result<usize, String>;
}

impl Handler for Entered<'_, WorkerApi> {
    fn handle(&self, request: &[u8], response: &mut [u8]) -> Result<usize, String> {
        // SAFETY: `handle` is declared as handler.c defines it; both
        // buffers are valid for the lengths passed.
        let written = unsafe {
            self.call(
                self.table().handle,
                (
                    request.as_ptr(),
                    request.len(),
                    response.as_mut_ptr(),
                    response.len(),
                ),
            )
        }
        .map_err(|e: CallError| e.to_string())?;
        match usize::try_from(written) {
            Ok(n) if n <= response.len() => Ok(n),
            _ => Err(format!(
                "v{}: handle returned {written}, expected a length of at most {}",
                self.version(),
                response.len()
            )),
        }
    }
}

struct Args {
    lib: PathBuf,
    threads: usize,
    port: u16,
    /// Sources to watch, and the command that rebuilds `lib` from them.
    watch: Vec<PathBuf>,
    build: Option<String>,
}

fn parse() -> Result<Args, String> {
    let mut args = Args {
        lib: PathBuf::new(),
        threads: 8,
        port: 0,
        watch: Vec::new(),
        build: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .ok_or(format!("{flag}: expected a value, found none"))
        };
        match flag.as_str() {
            "--lib" => args.lib = value()?.into(),
            "--watch" => args.watch.push(value()?.into()),
            "--build" => args.build = Some(value()?),
            "--threads" => {
                let v = value()?;
                args.threads = v
                    .parse()
                    .map_err(|_| format!("--threads: expected a number, found {v:?}"))?
            }
            "--port" => {
                let v = value()?;
                args.port = v
                    .parse()
                    .map_err(|_| format!("--port: expected a port number, found {v:?}"))?
            }
            other => {
                return Err(format!(
                    "expected --lib, --threads, --port, --watch or --build, found {other:?}"
                ));
            }
        }
    }
    if args.lib.as_os_str().is_empty() {
        return Err("expected --lib PATH (the plugin library), found none".into());
    }
    if args.watch.is_empty() != args.build.is_none() {
        return Err("expected --watch SRC and --build CMD together, found one of them".into());
    }
    Ok(args)
}

fn main() -> ExitCode {
    let args = match parse() {
        Ok(args) => args,
        Err(why) => {
            eprintln!("worker-pool: {why}");
            return ExitCode::from(2);
        }
    };
    let plugin: Plugin<WorkerApi> = match Plugin::load(&args.lib, Options::default()) {
        Ok(plugin) => plugin,
        Err(why) => {
            eprintln!("worker-pool: cannot load {}: {why}", args.lib.display());
            return ExitCode::from(1);
        }
    };
    // Rebuilt and swapped on every change, for as long as this is held.
    let _rebuilding = match &args.build {
        Some(build) => {
            let rebuild = Rebuild::new(args.watch.clone(), build.clone(), args.lib.clone());
            match plugin.rebuild_on_change(rebuild) {
                Ok(rebuilding) => Some(rebuilding),
                Err(why) => {
                    eprintln!("worker-pool: cannot watch the sources: {why}");
                    return ExitCode::from(1);
                }
            }
        }
        None => None,
    };
    let listener = match TcpListener::bind(("127.0.0.1", args.port)) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("worker-pool: cannot listen on port {}: {e}", args.port);
            return ExitCode::from(1);
        }
    };
    match listener.local_addr() {
        Ok(addr) => println!("listening on {addr} with {} threads", args.threads),
        Err(e) => eprintln!("worker-pool: listening, but on which port? {e}"),
    }
    for i in 0..args.threads {
        let listener = match listener.try_clone() {
            Ok(l) => l,
            Err(e) => {
                eprintln!("worker-pool: worker {i} not started: {e}");
                continue;
            }
        };
        let plugin = plugin.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("worker-{i}"))
            .spawn(move || serve(&listener, &plugin));
        if let Err(e) = spawned {
            eprintln!("worker-pool: worker {i} not started: {e}");
        }
    }
    for line in std::io::stdin().lock().lines() {
        match line.as_deref().map(str::trim) {
            Ok("reload") => match plugin.reload() {
                Ok(version) => println!("reloaded: v{version}"),
                // The line saying why was written by the engine.
                Err(_) => println!("reload refused; still v{}", plugin.version()),
            },
            Ok("quit") | Err(_) => break,
            Ok("") => {}
            Ok(other) => println!("expected reload or quit, found {other:?}"),
        }
    }
    ExitCode::SUCCESS
}

/// One worker: takes connections in turn and answers every line of each.
fn serve(listener: &TcpListener, plugin: &Plugin<WorkerApi>) {
    loop {
        match listener.accept() {
            Ok((stream, _)) => answer(stream, plugin),
            Err(e) => eprintln!("worker-pool: accept failed: {e}"),
        }
    }
}

fn answer(stream: TcpStream, plugin: &Plugin<WorkerApi>) {
    let _ = stream.set_nodelay(true);
    let mut out = match stream.try_clone() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("worker-pool: connection dropped: {e}");
            return;
        }
    };
    let mut response = vec![0u8; 4096];
    for request in BufReader::new(stream).split(b'\n') {
        let Ok(request) = request else { return };
        let mut reply = match plugin.enter().handle(&request, &mut response) {
            Ok(n) => response[..n].to_vec(),
            Err(why) => format!("error: {why}").into_bytes(),
        };
        reply.push(b'\n');
        if out.write_all(&reply).is_err() {
            return;
        }
    }
}
