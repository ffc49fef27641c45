//! Rust plugins written with the `hotreload-plugin` crate, built by a real
//! `cargo build`: each test gets a crate of its own (its own name, so that
//! libraries never collide), and every crate of a test binary shares one
//! target folder, so the plugin crate and its dependencies are compiled
//! once, not once per test.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The target folder every Rust plugin of this test binary builds into.
pub fn target_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("rust-plugins")
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("the workspace's folder")
}

/// The build command the server runs for a crate in its folder.
pub const CARGO_BUILD: &str = "cargo build --offline --quiet";

/// A crate `name` in `dir` with `lib_rs` as its `src/lib.rs`; returns the
/// library `cargo build` writes.
pub fn write_crate(dir: &Path, name: &str, lib_rs: &str) -> PathBuf {
    write_crate_with(dir, name, lib_rs, "")
}

/// [`write_crate`] with more of `Cargo.toml` (a `[profile.dev]` table).
pub fn write_crate_with(dir: &Path, name: &str, lib_rs: &str, manifest: &str) -> PathBuf {
    let plugin_crate = workspace().join("crates/hotreload-plugin");
    std::fs::create_dir_all(dir.join("src")).expect("src folder");
    std::fs::write(
        dir.join("Cargo.toml"),
        format!(
            "[package]\nname = \"{name}\"\nversion = \"0.1.0\"\nedition = \"2024\"\npublish = false\n\n\
             [lib]\ncrate-type = [\"cdylib\"]\n\n\
             [dependencies]\nhotreload-plugin = {{ path = {:?} }}\n\n[workspace]\n{manifest}\n",
            plugin_crate.display().to_string()
        ),
    )
    .expect("write Cargo.toml");
    // The workspace's lock pins the same dependencies, so nothing is
    // resolved (or fetched) again.
    std::fs::copy(workspace().join("Cargo.lock"), dir.join("Cargo.lock")).expect("copy the lock");
    std::fs::write(dir.join("src/lib.rs"), lib_rs).expect("write lib.rs");
    library(name)
}

/// Where `cargo build` puts crate `name`'s library.
pub fn library(name: &str) -> PathBuf {
    target_dir()
        .join("debug")
        .join(format!("lib{}.so", name.replace('-', "_")))
}

/// Builds `dir`'s crate now, as the server would; panics with cargo's
/// output when it fails.
pub fn build(dir: &Path) {
    let out = cargo(dir).output().expect("run cargo");
    assert!(
        out.status.success(),
        "cargo build failed in {}:\n{}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `cargo build` of `dir`'s crate, into the shared target folder.
pub fn cargo(dir: &Path) -> Command {
    let mut c = Command::new("cargo");
    c.args(["build", "--offline", "--quiet"])
        .current_dir(dir)
        .env("CARGO_TARGET_DIR", target_dir());
    c
}

/// Compiles the plugin crate and its dependencies once for this test
/// binary, before any server starts (a cold build takes longer than a
/// server's first build is waited for).
pub fn warm_up() {
    static WARM: OnceLock<()> = OnceLock::new();
    WARM.get_or_init(|| {
        let dir = target_dir().join("warm-up");
        write_crate(&dir, "hr_warm_up", &plugin(&Variant::default()));
        build(&dir);
    });
}

/// The server's arguments for a crate in its folder: watch `src`, build
/// with cargo, load `library`, tick every 10 ms.
pub fn server_args(library: &Path) -> Vec<String> {
    [
        "--watch",
        "src",
        "--build",
        CARGO_BUILD,
        "--lib",
        &library.display().to_string(),
        "--tick-ms",
        "10",
        "--no-control",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// What a test plugin does differently.
#[derive(Clone, Debug)]
pub struct Variant {
    /// Added to the score every tick.
    pub step: i64,
    /// Rust statements run at the start of the call named (`tick`, `init`,
    /// `on_reload`, `migrate`); `calls` is this library's live count of
    /// ticks (a static: a fresh library starts at 0).
    pub tick: String,
    pub init: String,
    pub on_reload: String,
    pub migrate: String,
    /// The state version (a change runs `migrate`).
    pub version: u32,
}

impl Default for Variant {
    fn default() -> Self {
        Variant {
            step: 1,
            tick: String::new(),
            init: String::new(),
            on_reload: String::new(),
            migrate: String::new(),
            version: 1,
        }
    }
}

/// A counter plugin with a nested struct and an array in its state, and
/// a static that counts this library's ticks.
pub fn plugin(v: &Variant) -> String {
    format!(
        r#"use std::sync::atomic::{{AtomicU32, Ordering}};

use hotreload_plugin::{{Host, Previous, State}};

/// Starts at zero in every build.
static CALLS: AtomicU32 = AtomicU32::new(0);

#[derive(State)]
#[repr(C)]
pub struct Pos {{
    x: f32,
    y: f32,
}}

#[derive(State)]
#[repr(C)]
pub struct Game {{
    score: i64,
    pos: Pos,
    hits: [u8; 3],
}}

fn init(g: &mut Game, host: &Host) {{
    {init}
    g.score = 0;
    host.log("init ran");
}}

fn tick(g: &mut Game, _dt: f64) {{
    let calls = CALLS.fetch_add(1, Ordering::Relaxed) + 1;
    let _ = calls;
    {tick}
    g.score += {step};
    g.pos.x += 0.5;
    if g.score % 10 == 0 {{
        println!("[rsplug] score={{}}", g.score);
    }}
}}

fn on_reload(g: &mut Game, host: &Host) {{
    {on_reload}
    host.log(&format!("on_reload at score {{}}", g.score));
}}

fn migrate(from: Previous<'_>, g: &mut Game) -> Result<(), String> {{
    let _ = from.version();
    {migrate}
    let _ = g;
    Ok(())
}}

hotreload_plugin::export! {{
    state: Game,
    version: {version},
    init: init,
    tick: tick,
    on_reload: on_reload,
    migrate: migrate,
}}
"#,
        init = v.init,
        tick = v.tick,
        step = v.step,
        on_reload = v.on_reload,
        migrate = v.migrate,
        version = v.version,
    )
}
