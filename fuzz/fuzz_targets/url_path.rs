//! URL path decoding and resolution: never panics, and whatever it accepts is a clean
//! absolute path that resolves only to a file of the deployment.
#![no_main]

use std::collections::BTreeMap;

use cdeploy_core::manifest::Site;
use cdeploy_core::rules::route::find_file;
use cdeploy_proxy::resolve::decode_path;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(path) = decode_path(raw) else {
        return;
    };
    assert!(path.starts_with('/'), "{path:?}");
    assert!(
        path.split('/').all(|s| s != ".." && s != "."),
        "dot segment in {path:?}"
    );
    assert!(!path.contains('\0') && !path.contains('\\'));
    let files: BTreeMap<String, u8> = [
        "/index.html",
        "/about.html",
        "/docs/index.html",
        "/404.html",
        "/assets/app.js",
    ]
    .into_iter()
    .enumerate()
    .map(|(i, p)| (p.to_string(), i as u8))
    .collect();
    for spa in [false, true] {
        let site = Site {
            spa,
            clean_urls: true,
        };
        if let Some((found, _, _)) = find_file(&files, site, &path) {
            assert!(files.contains_key(found));
        }
    }
});
