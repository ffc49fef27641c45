//! The fuzzer's corpus for the request parser (`fuzz/corpus/request`, grown
//! with `cargo +nightly fuzz run request` and minimized with `cargo fuzz
//! cmin request`), replayed as an ordinary test on the stable toolchain:
//! the same property the fuzz target checks, on every saved input.

use std::path::Path;

#[test]
fn every_saved_input_is_refused_or_read_back_the_same() {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/request");
    let mut cases = 0;
    for entry in std::fs::read_dir(&corpus).expect("the corpus folder") {
        let path = entry.expect("an entry").path();
        let data = std::fs::read(&path).expect("a corpus file");
        match hotreload_control::parse_request(&data) {
            Ok(request) => {
                let line = request.command.to_line(request.id);
                let again = hotreload_control::parse_request(line.as_bytes())
                    .unwrap_or_else(|r| panic!("{}: its own line refused: {r:?}", path.display()));
                assert_eq!(again, request, "{}", path.display());
            }
            Err(refused) => {
                assert!(!refused.message.is_empty(), "{}", path.display());
                assert!(
                    hotreload_control::parse_server_message(&refused.to_line()).is_ok(),
                    "{}",
                    path.display()
                );
            }
        }
        cases += 1;
    }
    assert!(cases >= 100, "only {cases} inputs in {}", corpus.display());
}
