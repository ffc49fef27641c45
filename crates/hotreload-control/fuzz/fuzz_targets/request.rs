//! The control socket's request parser, on any bytes: it must refuse or
//! accept without panicking, and what it accepts must read back the same
//! from the line the client side would write for it.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match hotreload_control::parse_request(data) {
        Ok(request) => {
            let line = request.command.to_line(request.id);
            let again = hotreload_control::parse_request(line.as_bytes())
                .expect("a request the parser accepted reads back from its own line");
            assert_eq!(again, request);
        }
        Err(refused) => {
            assert!(!refused.message.is_empty());
            let _ = hotreload_control::parse_server_message(&refused.to_line())
                .expect("an error reply is a server message");
        }
    }
});
