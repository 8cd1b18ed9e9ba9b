//! Manifests from storage (hand-edited or corrupt) never panic the proxy.
#![no_main]

use cdeploy_core::manifest::Manifest;
use cdeploy_proxy::site::ServedSite;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = serde_json::from_slice::<Manifest>(data) {
        let n = m.files.len();
        let served = ServedSite::new(m);
        assert!(served.files.len() <= n);
    }
});
