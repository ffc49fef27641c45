use super::*;
use std::collections::hash_map::RandomState;
use std::fs;
use std::hash::{BuildHasher, Hasher};
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn field(name: &str, offset: usize, scalar: Scalar, count: usize, transient: bool) -> Field {
    Field {
        transient,
        ..Field::new(name, offset, scalar, count)
    }
}

/// One field of every scalar kind and width, an array, a transient field.
fn every_kind(source: Source) -> Layout {
    let int = |signed, bytes| Scalar::Int { signed, bytes };
    let scalars = [
        ("i8", int(true, 1), 1, false),
        ("i16", int(true, 2), 1, false),
        ("i32", int(true, 4), 1, false),
        ("i64", int(true, 8), 1, false),
        ("u8", int(false, 1), 1, false),
        ("u16", int(false, 2), 1, false),
        ("u32", int(false, 4), 1, true),
        ("u64", int(false, 8), 1, false),
        ("f32", Scalar::Float { bytes: 4 }, 1, false),
        ("f64", Scalar::Float { bytes: 8 }, 1, false),
        ("flag", Scalar::Bool, 1, false),
        ("ptr", Scalar::Pointer, 1, true),
        ("items", int(true, 4), 5, false),
        ("enemies[0].hp", Scalar::Float { bytes: 8 }, 3, false),
        ("ünï", Scalar::Bool, 2, false),
    ];
    let mut offset = 0;
    let mut fields = Vec::new();
    for (name, scalar, count, transient) in scalars {
        fields.push(field(name, offset, scalar, count, transient));
        offset += scalar.size() * count + 1; // a gap of padding
    }
    // Version 2: shapes, text and enumerators.
    let mut shaped = vec![
        Field::array("grid", offset, int(true, 4), vec![2, 3]),
        Field::array("cube", offset + 24, int(false, 1), vec![2, 1, 2]),
        Field::array("name", offset + 28, int(true, 1), vec![5]),
        Field::new("mode", offset + 33, int(false, 2), 1),
    ];
    shaped[2].shown = Shown::Text;
    shaped[3].shown = Shown::Enum(
        vec![
            Enumerator {
                value: -1,
                name: "DOWN".into(),
            },
            Enumerator {
                value: i128::from(u64::MAX),
                name: "ÜP".into(),
            },
        ]
        .into(),
    );
    offset += 35;
    fields.extend(shaped);
    Layout {
        size: offset + 7,
        fields,
        source,
    }
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn with_layout(layout: Layout, state_version: u32, seed: u8) -> Saved {
    Saved {
        state: pattern(layout.size, seed),
        state_version,
        layout: Some(layout),
    }
}

fn dwarf() -> Source {
    Source::Dwarf {
        type_name: "struct game_state".into(),
        chosen_by: "the type of the `state` parameter of `logic_tick`".into(),
    }
}

/// The whole file `save` writes, in memory.
fn encode(saved: &Saved) -> Vec<u8> {
    let mut bytes = encode_head(&saved.into()).expect("encodable");
    bytes.extend_from_slice(&saved.state);
    let crc = crc32(&bytes);
    bytes.extend_from_slice(&crc.to_le_bytes());
    bytes
}

/// Recomputes the checksum after a test edited the bytes.
fn reseal(bytes: &mut [u8]) {
    let end = bytes.len() - CHECKSUM_LEN;
    let crc = crc32(&bytes[..end]);
    bytes[end..].copy_from_slice(&crc.to_le_bytes());
}

fn load_bytes(dir: &Path, bytes: &[u8]) -> Result<Saved, PersistError> {
    let path = dir.join("probe.bin");
    fs::write(&path, bytes).expect("write the probe file");
    load(&path)
}

fn temps(dir: &Path, name: &str) -> Vec<String> {
    let prefix = format!(".{name}.tmp-");
    let mut found: Vec<String> = fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(&prefix))
        .collect();
    found.sort();
    found
}

#[test]
fn encode_matches_what_save_writes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("s.bin");
    let saved = SavedRef {
        state: &[1, 2, 3, 4],
        state_version: 7,
        layout: None,
    };
    save(&path, &saved).expect("save");
    assert_eq!(
        std::fs::read(&path).expect("read"),
        super::encode(&saved).expect("encode")
    );
}

#[test]
fn crc32_matches_the_reference_values() {
    assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    assert_eq!(crc32(b""), 0);
    assert_eq!(
        crc32(b"The quick brown fox jumps over the lazy dog"),
        0x414F_A339
    );
    // Slicing-by-8 agrees with the bytewise loop at every length and
    // split point.
    let data = pattern(100, 7);
    for len in 0..data.len() {
        let mut bytewise = !0u32;
        for &b in &data[..len] {
            bytewise = (bytewise >> 8) ^ CRC_TABLES[0][((bytewise ^ u32::from(b)) & 0xff) as usize];
        }
        assert_eq!(crc32(&data[..len]), !bytewise, "length {len}");
        let mut split = Crc32::new();
        split.update(&data[..len / 3]);
        split.update(&data[len / 3..len]);
        assert_eq!(split.finish(), !bytewise, "split at {}", len / 3);
    }
}

#[test]
fn round_trip_without_a_layout() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("state.bin");
    for saved in [
        Saved {
            state: pattern(1000, 3),
            state_version: 0,
            layout: None,
        },
        Saved {
            state: Vec::new(),
            state_version: u32::MAX,
            layout: None,
        },
    ] {
        save(&path, &(&saved).into()).expect("save");
        assert_eq!(load(&path).expect("load"), saved);
    }
    assert!(temps(dir.path(), "state.bin").is_empty());
}

#[test]
fn round_trip_with_a_layout_of_every_kind_and_both_sources() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("state.bin");
    for source in [Source::Schema, dwarf()] {
        let saved = with_layout(every_kind(source), 7, 1);
        save(&path, &(&saved).into()).expect("save");
        let loaded = load(&path).expect("load");
        assert_eq!(loaded, saved);
        let layout = loaded.layout.expect("a layout");
        assert!(layout.field("u32").expect("u32").transient);
        assert!(!layout.field("u64").expect("u64").transient);
        assert_eq!(layout.field("items").expect("items").count, 5);
    }
    // A layout with no fields; and a bare file name is saved in the
    // current directory.
    let empty = Saved {
        state: vec![9; 16],
        state_version: 2,
        layout: Some(Layout {
            size: 16,
            fields: Vec::new(),
            source: Source::Schema,
        }),
    };
    save(&path, &(&empty).into()).expect("save");
    assert_eq!(load(&path).expect("load"), empty);
    assert_eq!(
        split_path(Path::new("state.bin")).expect("split").0,
        PathBuf::from(".")
    );
}

#[test]
fn the_format_is_as_documented() {
    let saved = Saved {
        state: vec![0xAB, 0xCD],
        state_version: 5,
        layout: None,
    };
    let bytes = encode(&saved);
    assert_eq!(bytes.len(), MIN_FILE_LEN + 2);
    assert_eq!(&bytes[..8], b"\x89HRSTATE");
    assert_eq!(bytes[8..12], 2u32.to_le_bytes());
    assert_eq!(bytes[12..20], (bytes.len() as u64).to_le_bytes());
    assert_eq!(bytes[20..24], 5u32.to_le_bytes());
    assert_eq!(bytes[24..32], 2u64.to_le_bytes());
    assert_eq!(bytes[32], 0);
    assert_eq!(bytes[33..35], [0xAB, 0xCD]);
    assert_eq!(bytes[35..], crc32(&bytes[..35]).to_le_bytes());
}

#[test]
fn every_truncation_is_an_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    for saved in [
        with_layout(every_kind(dwarf()), 3, 4),
        Saved {
            state: pattern(40, 1),
            state_version: 0,
            layout: None,
        },
    ] {
        let bytes = encode(&saved);
        assert_eq!(load_bytes(dir.path(), &bytes), Ok(saved));
        for len in 0..bytes.len() {
            match load_bytes(dir.path(), &bytes[..len]) {
                // An empty file carries no sign of being a state file.
                Err(PersistError::NotAStateFile { found }) if len == 0 => {
                    assert!(found.contains("empty"), "{found}")
                }
                Err(PersistError::Truncated { expected, found }) => {
                    assert_eq!(found, len);
                    assert!(expected > found);
                }
                Err(PersistError::Corrupt(_)) => {}
                other => panic!("cut to {len} of {} bytes: {other:?}", bytes.len()),
            }
        }
    }
}

#[test]
fn every_changed_byte_is_an_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let saved = with_layout(every_kind(dwarf()), 3, 4);
    let bytes = encode(&saved);
    for at in 0..bytes.len() {
        for flip in [0x01, 0x80, 0xFF] {
            let mut bad = bytes.clone();
            bad[at] ^= flip;
            let result = load_bytes(dir.path(), &bad);
            assert!(result.is_err(), "byte {at} ^ {flip:#x} loaded");
        }
    }
    // Appended bytes too.
    let mut longer = bytes.clone();
    longer.push(0);
    let expected = format!("expected {} bytes", bytes.len());
    let found = format!("found {}", longer.len());
    assert!(matches!(
        load_bytes(dir.path(), &longer),
        Err(PersistError::Corrupt(why)) if why.contains(&expected) && why.contains(&found)
    ));
    let mut flipped = bytes;
    flipped[40] ^= 1;
    let message = load_bytes(dir.path(), &flipped)
        .expect_err("corrupt")
        .to_string();
    assert!(message.starts_with("corrupt state file: checksum mismatch: expected 0x"));
    assert!(message.contains("found 0x"), "{message}");
}

#[test]
fn foreign_files_are_described() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (Vec::new(), "an empty file (0 bytes)"),
        (
            b"score=10\ntime=1.0\n".to_vec(),
            "a text file starting \"score=10\" (18 bytes)",
        ),
        (
            b"#!/bin/sh\necho hi\n".to_vec(),
            "a script starting \"#!/bin/sh\"",
        ),
        (
            fs::read(std::env::current_exe().expect("exe")).expect("read exe"),
            "an ELF file",
        ),
        (
            vec![0, 1, 2, 0xfe, 0xff],
            "binary data starting 00 01 02 fe ff (5 bytes)",
        ),
        (b"\x89PNG\r\n\x1a\n....".to_vec(), "a PNG image"),
        (b"\x89HRSTATX".to_vec(), "binary data starting 89 48 52"),
    ];
    for (bytes, expected) in cases {
        match load_bytes(dir.path(), &bytes) {
            Err(error @ PersistError::NotAStateFile { .. }) => {
                let message = error.to_string();
                assert!(message.contains(expected), "{message}");
                assert!(message.contains("expected the magic bytes"), "{message}");
            }
            other => panic!("{expected}: {other:?}"),
        }
    }
}

#[test]
fn a_missing_file_is_missing_and_a_folder_fifo_or_device_is_no_state_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    assert_eq!(
        load(&dir.path().join("none.bin")),
        Err(PersistError::Missing)
    );
    let err = load(dir.path()).expect_err("a directory");
    assert!(
        matches!(&err, PersistError::NotAStateFile { found } if found.contains("a folder")),
        "{err}"
    );
    // A FIFO would block an ordinary open for ever; a device be read for
    // ever. Both are refused at once.
    let fifo = dir.path().join("fifo");
    let made = Command::new("mkfifo").arg(&fifo).status().expect("mkfifo");
    assert!(made.success());
    let err = load(&fifo).expect_err("a FIFO");
    assert!(
        err.to_string().contains("a FIFO, not a regular file"),
        "{err}"
    );
    let zero = dir.path().join("zero");
    std::os::unix::fs::symlink("/dev/zero", &zero).expect("symlink");
    let err = load(&zero).expect_err("a device");
    assert!(
        err.to_string().contains("a device, not a regular file"),
        "{err}"
    );
    // Saving into a directory that does not exist names it.
    let err = save(
        &dir.path().join("no/such/dir/state.bin"),
        &SavedRef {
            state: &[1],
            state_version: 0,
            layout: None,
        },
    )
    .expect_err("no directory");
    assert!(err.to_string().contains("no/such/dir"), "{err}");
}

#[test]
fn another_format_version_is_unsupported() {
    let dir = tempfile::tempdir().expect("tempdir");
    let saved = with_layout(every_kind(Source::Schema), 1, 1);
    for version in [3u32, 0, u32::MAX] {
        let mut bytes = encode(&saved);
        bytes[8..12].copy_from_slice(&version.to_le_bytes());
        reseal(&mut bytes);
        let err = load_bytes(dir.path(), &bytes).expect_err("another version");
        assert_eq!(
            err,
            PersistError::UnsupportedVersion {
                expected: FORMAT_VERSION,
                found: version
            }
        );
        // Told apart even when cut short after the version.
        assert_eq!(load_bytes(dir.path(), &bytes[..12]), Err(err));
    }
    let message = PersistError::UnsupportedVersion {
        expected: 1,
        found: 2,
    }
    .to_string();
    assert_eq!(
        message,
        "unsupported state file format: expected version 1, found version 2 \
         (written by a newer hotreload)"
    );
}

#[test]
fn damaged_lengths_allocate_nothing_large() {
    let dir = tempfile::tempdir().expect("tempdir");
    let saved = with_layout(every_kind(dwarf()), 1, 1);
    let good = encode(&saved);
    // A huge file length: caught against the real size, before reading.
    let mut bytes = good.clone();
    bytes[12..20].copy_from_slice(&u64::MAX.to_le_bytes());
    assert_eq!(
        load_bytes(dir.path(), &bytes),
        Err(PersistError::Truncated {
            expected: usize::MAX,
            found: good.len()
        })
    );
    // A file length below the minimum.
    bytes[12..20].copy_from_slice(&3u64.to_le_bytes());
    assert!(
        matches!(load_bytes(dir.path(), &bytes), Err(PersistError::Corrupt(why)) if why.contains("at least 37"))
    );
    // Huge lengths inside, with a valid checksum (a writer's bug, not
    // damage): the state size, the field count, a string's length.
    let Source::Dwarf {
        type_name,
        chosen_by,
    } = dwarf()
    else {
        unreachable!()
    };
    let field_count_at = HEADER_LEN + 8 + 1 + 4 + type_name.len() + 4 + chosen_by.len();
    for (at, value, what) in [
        (24, u64::MAX, "the state's bytes"),
        (24, 1 << 40, "the state's bytes"),
        (field_count_at, u64::MAX >> 1, "the field count"),
        (HEADER_LEN + 9, u32::MAX as u64, "the layout's type name"),
    ] {
        let mut bytes = good.clone();
        let width = if what == "the layout's type name" {
            4
        } else {
            8
        };
        bytes[at..at + width].copy_from_slice(&value.to_le_bytes()[..width]);
        reseal(&mut bytes);
        match load_bytes(dir.path(), &bytes) {
            Err(PersistError::Corrupt(why)) => assert!(why.starts_with(what), "{why}"),
            other => panic!("{what}: {other:?}"),
        }
    }
}

/// Past the checksum, the parser still meets only bounded reads: random
/// bodies and every byte of a real file set to other values, each with a
/// valid checksum, load or fail but never panic.
#[test]
fn any_body_with_a_valid_checksum_loads_or_fails_without_panicking() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut seed = RandomState::new().build_hasher().finish() | 1;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for _ in 0..2000 {
        let body_len = (next() % 160) as usize;
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        let total = PREAMBLE_LEN + body_len + CHECKSUM_LEN;
        bytes.extend_from_slice(&(total as u64).to_le_bytes());
        // Mostly small numbers, so that lengths sometimes fit.
        bytes.extend((0..body_len).map(|_| match next() % 4 {
            0 => (next() % 256) as u8,
            1 => 1,
            _ => 0,
        }));
        bytes.extend_from_slice(&[0; CHECKSUM_LEN]);
        reseal(&mut bytes);
        let _ = load_bytes(dir.path(), &bytes);
    }
    let good = encode(&with_layout(every_kind(dwarf()), 3, 4));
    for at in PREAMBLE_LEN..good.len() - CHECKSUM_LEN {
        for value in [0, 1, 2, 3, 4, 8, 0x7f, 0xff] {
            let mut bytes = good.clone();
            bytes[at] = value;
            reseal(&mut bytes);
            let _ = load_bytes(dir.path(), &bytes);
        }
    }
}

#[test]
fn a_layout_that_does_not_fit_is_refused_both_ways() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("state.bin");
    let layout = Layout {
        size: 8,
        fields: vec![field(
            "a",
            4,
            Scalar::Int {
                signed: true,
                bytes: 4,
            },
            2,
            false,
        )],
        source: Source::Schema,
    };
    let state = [0u8; 8];
    let err = save(
        &path,
        &SavedRef {
            state: &state,
            state_version: 0,
            layout: Some(&layout),
        },
    )
    .expect_err("past the end");
    assert_eq!(
        err.to_string(),
        "corrupt state file: not written, as it would not load back: \
         field a ends at byte 12: expected it within the 8-byte state"
    );
    assert_eq!(load(&path), Err(PersistError::Missing));
    assert!(temps(dir.path(), "state.bin").is_empty());

    let mismatched = Layout {
        size: 4,
        ..layout.clone()
    };
    assert!(
        encode_head(&SavedRef {
            state: &state,
            state_version: 0,
            layout: Some(&mismatched)
        })
        .is_err()
    );
    let odd = Layout {
        size: 8,
        fields: vec![field(
            "b",
            0,
            Scalar::Int {
                signed: false,
                bytes: 3,
            },
            1,
            false,
        )],
        source: Source::Schema,
    };
    assert!(
        encode_head(&SavedRef {
            state: &state,
            state_version: 0,
            layout: Some(&odd)
        })
        .is_err()
    );
    let overflow = Layout {
        size: 8,
        fields: vec![field("c", usize::MAX, Scalar::Bool, 2, false)],
        source: Source::Schema,
    };
    assert!(
        encode_head(&SavedRef {
            state: &state,
            state_version: 0,
            layout: Some(&overflow)
        })
        .is_err()
    );

    // The same checks on load, with a valid checksum: a field moved past
    // the state, and a width of 3.
    let good = Layout {
        size: 8,
        fields: vec![field(
            "a",
            0,
            Scalar::Int {
                signed: true,
                bytes: 4,
            },
            2,
            false,
        )],
        source: Source::Schema,
    };
    let saved = Saved {
        state: state.to_vec(),
        state_version: 0,
        layout: Some(good),
    };
    let bytes = encode(&saved);
    let offset_at = HEADER_LEN + 8 + 1 + 8 + 4 + 1;
    let mut moved = bytes.clone();
    moved[offset_at..offset_at + 8].copy_from_slice(&u64::MAX.to_le_bytes());
    reseal(&mut moved);
    assert!(
        matches!(load_bytes(dir.path(), &moved), Err(PersistError::Corrupt(why)) if why.starts_with("field a"))
    );
    let mut three = bytes;
    three[offset_at + 8 + 2] = 3;
    reseal(&mut three);
    assert!(
        matches!(load_bytes(dir.path(), &three), Err(PersistError::Corrupt(why)) if why.contains("found an integer of 3 bytes"))
    );
}

#[test]
fn a_killed_writers_leftover_changes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("state.bin");
    let first = with_layout(every_kind(Source::Schema), 1, 1);
    let second = Saved {
        state: pattern(300, 2),
        state_version: 2,
        layout: None,
    };
    save(&path, &(&first).into()).expect("save");
    // A writer killed mid-way: half of the next file, under a name whose
    // process is gone (pid_max is at most 2^22).
    let half = encode(&second);
    let stray = dir.path().join(".state.bin.tmp-999999999-0");
    fs::write(&stray, &half[..half.len() / 2]).expect("stray");
    // Files that only look alike are never touched.
    let lookalike = dir.path().join(".state.bin.tmp-notes");
    fs::write(&lookalike, b"mine").expect("lookalike");

    assert_eq!(load(&path).expect("load"), first);
    save(&path, &(&second).into()).expect("save over the leftover");
    assert_eq!(load(&path).expect("load"), second);
    assert!(!stray.exists(), "the leftover was removed");
    assert!(lookalike.exists());
    assert_eq!(temps(dir.path(), "state.bin"), [".state.bin.tmp-notes"]);

    // Names planted by someone else in a shared folder (the pid is easy to
    // guess; the random part is not) neither block a save nor are written
    // into.
    let me = std::process::id();
    for seq in 0..64 {
        fs::write(
            dir.path().join(format!(".state.bin.tmp-{me}-{seq}")),
            b"old",
        )
        .expect("plant");
    }
    save(&path, &(&first).into()).expect("save past planted names");
    assert_eq!(load(&path).expect("load"), first);
    for seq in 0..64 {
        let name = dir.path().join(format!(".state.bin.tmp-{me}-{seq}"));
        assert_eq!(fs::read(&name).expect("read"), b"old", "{}", name.display());
    }
}

const KILL_CHILD_ENV: &str = "HOTRELOAD_PERSIST_KILL_CHILD";

/// The two states the child alternates between: different sizes,
/// versions, and one with a layout.
fn kill_states() -> [Saved; 2] {
    [
        Saved {
            state: pattern(256 * 1024, 0x11),
            state_version: 1,
            layout: None,
        },
        with_layout(
            Layout {
                size: 200 * 1024,
                fields: vec![field(
                    "big",
                    0,
                    Scalar::Int {
                        signed: false,
                        bytes: 8,
                    },
                    25 * 1024,
                    false,
                )],
                source: dwarf(),
            },
            2,
            0x22,
        ),
    ]
}

/// Not a test on its own: with `HOTRELOAD_PERSIST_KILL_CHILD` set, the
/// child process of `sigkill_at_any_moment_leaves_a_complete_file`.
#[test]
fn kill_child_saves_in_a_loop() {
    let Some(path) = std::env::var_os(KILL_CHILD_ENV) else {
        return;
    };
    let path = PathBuf::from(path);
    let states = kill_states();
    let ready = path.with_extension("ready");
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut i = 0usize;
    while Instant::now() < deadline {
        save(&path, &(&states[i % 2]).into()).expect("child save");
        if i == 0 {
            fs::write(&ready, b"").expect("ready marker");
        }
        i += 1;
    }
}

#[test]
fn sigkill_at_any_moment_leaves_a_complete_file() {
    const ROUNDS: usize = 32;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("state.bin");
    let ready = path.with_extension("ready");
    let exe = std::env::current_exe().expect("test binary");
    let states = kill_states();
    let mut random = RandomState::new().build_hasher();
    let mut held = [0usize; 2];
    let mut mid_write = 0;
    for round in 0..ROUNDS {
        let _ = fs::remove_file(&ready);
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "state::persist::tests::kill_child_saves_in_a_loop",
                "--test-threads=1",
            ])
            .env(KILL_CHILD_ENV, &path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn the child");
        let waited = Instant::now();
        while !ready.exists() {
            assert!(
                waited.elapsed() < Duration::from_secs(20),
                "the child never saved"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        random.write_usize(round);
        let delay = Duration::from_micros(random.finish() % 20_000);
        std::thread::sleep(delay);
        child.kill().expect("SIGKILL the child");
        let status = child.wait().expect("reap the child");
        assert_eq!(
            status.signal(),
            Some(9),
            "the child ended on its own: {status}"
        );

        let loaded = load(&path).unwrap_or_else(|e| panic!("round {round}: {e}"));
        let which = states
            .iter()
            .position(|s| *s == loaded)
            .unwrap_or_else(|| panic!("round {round}: a state that was never saved"));
        held[which] += 1;
        if !temps(dir.path(), "state.bin").is_empty() {
            mid_write += 1;
        }
    }
    eprintln!(
        "{ROUNDS} kills: file held state A {} times, B {} times; killed mid-write (temp file left) {mid_write} times",
        held[0], held[1]
    );
    // The next save clears what the killed writers left.
    save(&path, &(&states[0]).into()).expect("save after the kills");
    assert_eq!(load(&path).expect("load"), states[0]);
    assert!(temps(dir.path(), "state.bin").is_empty());
}

/// A version-1 file as that version wrote it: the layout without shapes
/// or display.
fn encode_v1(state: &[u8], state_version: u32, layout: &Layout) -> Vec<u8> {
    let mut out = MAGIC.to_vec();
    out.extend_from_slice(&1u32.to_le_bytes());
    out.extend_from_slice(&0u64.to_le_bytes());
    out.extend_from_slice(&state_version.to_le_bytes());
    out.extend_from_slice(&(state.len() as u64).to_le_bytes());
    out.push(1);
    out.extend_from_slice(&(layout.size as u64).to_le_bytes());
    out.push(0);
    out.extend_from_slice(&(layout.fields.len() as u64).to_le_bytes());
    for f in &layout.fields {
        out.extend_from_slice(&(f.name.len() as u32).to_le_bytes());
        out.extend_from_slice(f.name.as_bytes());
        out.extend_from_slice(&(f.offset as u64).to_le_bytes());
        let (kind, signed, width) = match f.scalar {
            Scalar::Int { signed, bytes } => (1, u8::from(signed), bytes),
            Scalar::Float { bytes } => (2, 0, bytes),
            Scalar::Bool => (3, 0, 1),
            Scalar::Pointer => (4, 0, 8),
        };
        out.extend_from_slice(&[kind, signed, width]);
        out.extend_from_slice(&(f.count as u64).to_le_bytes());
        out.push(u8::from(f.transient));
    }
    out.extend_from_slice(state);
    let total = (out.len() + CHECKSUM_LEN) as u64;
    out[12..20].copy_from_slice(&total.to_le_bytes());
    let crc = crc32(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

#[test]
fn a_version_1_file_still_loads_with_flat_arrays() {
    let dir = tempfile::tempdir().expect("tempdir");
    let i32s = Scalar::Int {
        signed: true,
        bytes: 4,
    };
    let v1_layout = Layout {
        size: 28,
        fields: vec![
            field("score", 0, i32s, 1, false),
            field("grid", 4, i32s, 6, true),
        ],
        source: Source::Schema,
    };
    let state = pattern(28, 9);
    let bytes = encode_v1(&state, 4, &v1_layout);
    let loaded = load_bytes(dir.path(), &bytes).expect("a version-1 file loads");
    assert_eq!(loaded.state, state);
    assert_eq!(loaded.state_version, 4);
    let layout = loaded.layout.expect("its layout");
    assert_eq!(layout.fields[0].dims, Vec::<usize>::new());
    assert_eq!(layout.fields[1].dims, vec![6]);
    assert!(layout.fields[1].transient);
    assert_eq!(layout, v1_layout);
    // Every cut and every changed byte of it is still an error, never a panic.
    for len in 0..bytes.len() {
        assert!(
            load_bytes(dir.path(), &bytes[..len]).is_err(),
            "cut to {len}"
        );
    }
    for at in PREAMBLE_LEN..bytes.len() - CHECKSUM_LEN {
        for value in [0, 1, 2, 0x7f, 0xff] {
            let mut bad = bytes.clone();
            bad[at] = value;
            reseal(&mut bad);
            let _ = load_bytes(dir.path(), &bad);
        }
    }
}

#[test]
fn shapes_and_displays_round_trip_and_bad_ones_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let layout = every_kind(dwarf());
    let saved = with_layout(layout.clone(), 2, 5);
    let loaded = load_bytes(dir.path(), &encode(&saved)).expect("loads");
    let back = loaded.layout.expect("a layout");
    assert_eq!(back.field("grid").map(|f| f.dims.clone()), Some(vec![2, 3]));
    assert_eq!(
        back.field("name").map(|f| f.shown.clone()),
        Some(Shown::Text)
    );
    assert_eq!(back, layout);

    let i32s = Scalar::Int {
        signed: true,
        bytes: 4,
    };
    let refused = |mut f: Field, what: &str| {
        let size = f.offset + f.scalar.size() * f.count;
        f.offset = 0;
        let saved = Saved {
            state: vec![0; size],
            state_version: 0,
            layout: Some(Layout {
                size,
                fields: vec![f],
                source: Source::Schema,
            }),
        };
        let err = save(&dir.path().join("x.bin"), &(&saved).into()).expect_err(what);
        assert!(err.to_string().contains(what), "{err}");
    };
    let mut wrong = Field::array("g", 0, i32s, vec![2, 3]);
    wrong.count = 5;
    refused(wrong, "expected 6 elements from its dimensions [2][3]");
    refused(
        Field::array("deep", 0, Scalar::Bool, vec![1; MAX_DIMS + 1]),
        "expected at most 32 dimensions",
    );
    let mut text = Field::new("t", 0, i32s, 2);
    text.shown = Shown::Text;
    refused(text, "expected text only for 1-byte integers");

    // Damaged counts in a file with a valid checksum fail before allocating.
    let one_enum = Layout {
        size: 1,
        fields: vec![Field {
            shown: Shown::Enum(
                vec![Enumerator {
                    value: 1,
                    name: "ON".into(),
                }]
                .into(),
            ),
            ..Field::new(
                "e",
                0,
                Scalar::Int {
                    signed: false,
                    bytes: 1,
                },
                1,
            )
        }],
        source: Source::Schema,
    };
    let good = encode(&with_layout(one_enum, 0, 1));
    // The field's name ("e") ends 21 bytes into the layout's fields; then
    // offset, type, count, transient, the number of dimensions, the display
    // tag and the enumerator count.
    let fields_at = HEADER_LEN + 8 + 1 + 8;
    let rank_at = fields_at + 4 + 1 + 8 + 3 + 8 + 1;
    let shown_at = rank_at + 1;
    for (at, value, what) in [
        (rank_at, 33u32, "the number of dimensions of field 0 (e)"),
        (rank_at, 1, ""),
        (shown_at, 7, "how field 0 (e) is shown"),
        (
            shown_at + 1,
            u32::MAX,
            "the enumerator count of field 0 (e)",
        ),
    ] {
        let mut bytes = good.clone();
        if at == shown_at + 1 {
            bytes[at..at + 4].copy_from_slice(&value.to_le_bytes());
        } else {
            bytes[at] = value as u8;
        }
        reseal(&mut bytes);
        match load_bytes(dir.path(), &bytes) {
            Err(PersistError::Corrupt(why)) => assert!(why.contains(what), "{what}: {why}"),
            other => panic!("{what}: {other:?}"),
        }
    }
}

/// The most this process has held in memory at once, in bytes.
fn peak_memory() -> u64 {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::uninit();
    // SAFETY: `getrusage` fills the struct it is given.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()) };
    // SAFETY: filled by the call above (it cannot fail for RUSAGE_SELF).
    (unsafe { usage.assume_init() }.ru_maxrss as u64) * 1024
}

#[test]
fn a_sparse_file_claiming_a_huge_state_fails_its_checksum_before_being_held() {
    const CLAIMED: u64 = 200 << 20;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("huge.bin");
    let mut head = Vec::new();
    head.extend_from_slice(&MAGIC);
    head.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    head.extend_from_slice(&CLAIMED.to_le_bytes());
    head.extend_from_slice(&0u32.to_le_bytes());
    head.extend_from_slice(&(CLAIMED - 33 - 4).to_le_bytes());
    head.push(0);
    fs::write(&path, &head).expect("write the header");
    // The rest is a hole: 200 MiB that take no disk and read as zeros.
    fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .and_then(|f| f.set_len(CLAIMED))
        .expect("extend");
    let before = peak_memory();
    let err = load(&path).expect_err("a checksum of zeros");
    assert!(err.to_string().contains("checksum mismatch"), "{err}");
    let grew = peak_memory().saturating_sub(before);
    assert!(
        grew < CLAIMED / 2,
        "the file was held in memory before its checksum failed: peak grew by {grew} bytes"
    );
}
