//! Source maps and file lists as the API checks them: never panics, and an accepted
//! path is relative, without dot segments or odd bytes.
#![no_main]

use std::collections::BTreeMap;

use cdeploy_core::manifest::validate_tree_path;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(map) = serde_json::from_slice::<BTreeMap<String, String>>(data) else {
        return;
    };
    for (path, hash) in &map {
        if validate_tree_path(path).is_ok() {
            let rel = path.trim_start_matches('/');
            assert!(!rel.is_empty(), "{path:?}");
            assert!(
                rel.split('/')
                    .all(|s| !s.is_empty() && s != "." && s != ".."),
                "{path:?}"
            );
            assert!(!path.contains('\0') && !path.contains('\\'), "{path:?}");
        }
        let _ = cdeploy_core::is_sha256_hex(hash);
    }
});
