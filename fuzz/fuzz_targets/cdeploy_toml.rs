//! `cdeploy.toml` parsing: any input gives settings or an error naming the file, never
//! a panic; accepted settings pass their own validation or say why not.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match cdeploy_core::config::parse(text, std::path::Path::new("cdeploy.toml")) {
        Ok(loaded) => {
            let _ = loaded.config.build.validate();
        }
        Err(e) => {
            assert!(e.to_string().contains("cdeploy.toml"), "{e}");
        }
    }
});
