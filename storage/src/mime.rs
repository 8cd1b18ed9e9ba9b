//! Content types as the proxy serves them, and which of them are worth compressing:
//! the manifest records a file's type when a deployment is published.

/// The `Content-Type` for a file path, with `charset=utf-8` on textual types.
pub fn content_type(path: &str) -> String {
    let ext = path
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    let base = match ext.as_str() {
        // Overrides where mime_guess' answer is dated or missing.
        "js" | "mjs" | "cjs" => "text/javascript".to_string(),
        "webmanifest" => "application/manifest+json".to_string(),
        "wasm" => "application/wasm".to_string(),
        "map" => "application/json".to_string(),
        _ => mime_guess::from_ext(&ext)
            .first_or_octet_stream()
            .essence_str()
            .to_string(),
    };
    if is_text(&base) {
        format!("{base}; charset=utf-8")
    } else {
        base
    }
}

fn is_text(essence: &str) -> bool {
    essence.starts_with("text/")
        || matches!(
            essence,
            "application/javascript"
                | "application/json"
                | "application/manifest+json"
                | "application/xml"
                | "application/xhtml+xml"
                | "application/rss+xml"
                | "application/atom+xml"
                | "image/svg+xml"
        )
}

/// Whether precompressing pays off for this type (already-compressed formats do not).
pub fn is_compressible(content_type: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or("").trim();
    is_text(essence)
        || matches!(
            essence,
            "application/wasm"
                | "font/ttf"
                | "font/otf"
                | "image/x-icon"
                | "image/vnd.microsoft.icon"
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types() {
        assert_eq!(content_type("/index.html"), "text/html; charset=utf-8");
        assert_eq!(
            content_type("/assets/index-abc.js"),
            "text/javascript; charset=utf-8"
        );
        assert_eq!(
            content_type("/assets/index-abc.css"),
            "text/css; charset=utf-8"
        );
        assert_eq!(content_type("/logo.svg"), "image/svg+xml; charset=utf-8");
        assert_eq!(content_type("/a.png"), "image/png");
        assert_eq!(content_type("/a.woff2"), "font/woff2");
        assert_eq!(content_type("/noext"), "application/octet-stream");
        assert!(is_compressible("text/css; charset=utf-8"));
        assert!(!is_compressible("image/png"));
    }
}
