//! Log events as a client, the builder API and the log files decode them: never
//! panics, and what decodes encodes back to an equal event.
#![no_main]

use cdeploy_core::event::Event;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for line in data.split(|b| *b == b'\n') {
        if let Ok(e) = serde_json::from_slice::<Event>(line) {
            let again: Event = serde_json::from_str(&serde_json::to_string(&e).unwrap()).unwrap();
            assert_eq!(again.seq, e.seq);
            assert_eq!(again.is_terminal(), e.is_terminal());
        }
    }
});
