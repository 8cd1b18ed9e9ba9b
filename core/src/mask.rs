//! Masks stored secrets in build log text: every occurrence of a value a build was given
//! is replaced by [`MASK`] before the line leaves the builder, so the live stream, the
//! bus and the archive never hold it. Besides the value itself, the forms tools print a
//! value in are caught, as the best CI runners do: its base64 (standard and URL-safe, in
//! each of the three alignments it can take inside a longer base64 text, so
//! `Authorization: Basic base64(user:value)` too), its URL-escaped and its JSON-escaped
//! forms. A value the build transforms otherwise (hex, reversed, in pieces) gets through.

use std::borrow::Cow;

use aho_corasick::{AhoCorasick, MatchKind};

/// A URL safe to print (a Redis or database URL in a log line): its password replaced
/// by [`MASK`]. Something that is no URL prints as `<invalid URL>`, never as itself.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some(MASK));
            u.to_string()
        }
        Ok(u) => u.to_string(),
        Err(_) => "<invalid URL>".into(),
    }
}

/// What a masked value reads as.
pub const MASK: &str = "***";

/// Shorter values (and lines of multi-line values) are not masked: masking `1` or
/// `true` would blank every log line that holds the character, and reveal it anyway.
pub const MIN_MASKED_LEN: usize = 4;

/// Encoded forms shorter than this are not masked: a 4- or 5-character piece of base64
/// occurs by chance in hashes and ids all over a build log.
const MIN_ENCODED_LEN: usize = 6;

/// The suffix [`crate::event::clip_line`] gives a clipped line.
const CLIPPED: &str = " … [line truncated]";

/// Finds and replaces secret values in text. Cheap to clone and share.
#[derive(Clone, Default)]
pub struct Masker {
    matcher: Option<AhoCorasick>,
    patterns: Vec<String>,
}

impl std::fmt::Debug for Masker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Masker({} patterns)", self.patterns.len())
    }
}

impl Masker {
    /// A masker for these values. A multi-line value is masked as a whole and line by
    /// line, as logs carry one line per event.
    pub fn new<'a>(values: impl IntoIterator<Item = &'a str>) -> Masker {
        let mut patterns: Vec<String> = Vec::new();
        for value in values {
            let whole = value.trim_end_matches(['\n', '\r']);
            let mut plain = vec![whole.to_string()];
            plain.extend(whole.split(['\n', '\r']).map(|l| l.trim_end().to_string()));
            plain.retain(|p| p.chars().count() >= MIN_MASKED_LEN);
            if plain.is_empty() {
                continue;
            }
            let mut encoded = encoded_forms(whole);
            encoded.retain(|e| e.len() >= MIN_ENCODED_LEN && !plain.contains(e));
            patterns.extend(plain);
            patterns.extend(encoded);
        }
        patterns.sort();
        patterns.dedup();
        if patterns.is_empty() {
            return Masker::default();
        }
        let matcher = AhoCorasick::builder()
            .match_kind(MatchKind::LeftmostLongest)
            .build(&patterns)
            .expect("a few literal patterns always build");
        Masker {
            matcher: Some(matcher),
            patterns,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.matcher.is_none()
    }

    /// `text` with every value replaced by [`MASK`]. A line clipped at the length limit
    /// also loses the start of a value the clip cut through.
    pub fn mask<'t>(&self, text: &'t str) -> Cow<'t, str> {
        let Some(matcher) = &self.matcher else {
            return Cow::Borrowed(text);
        };
        let mut out = if matcher.is_match(text) {
            Cow::Owned(matcher.replace_all(text, &vec![MASK; self.patterns.len()]))
        } else {
            Cow::Borrowed(text)
        };
        if let Some(kept) = out.strip_suffix(CLIPPED) {
            if let Some(cut) = self.cut_value_at_end(kept) {
                let start = kept.len() - cut;
                out = Cow::Owned(format!("{}{MASK}{CLIPPED}", &kept[..start]));
            }
        }
        out
    }

    /// The length of the longest start of a value (of at least [`MIN_MASKED_LEN`]
    /// characters) that `text` ends with.
    fn cut_value_at_end(&self, text: &str) -> Option<usize> {
        self.patterns
            .iter()
            .filter_map(|p| {
                (MIN_MASKED_LEN..p.len())
                    .rev()
                    .filter(|&n| p.is_char_boundary(n))
                    .find(|&n| text.ends_with(&p[..n]))
            })
            .max()
    }
}

/// The forms a value takes when a tool encodes it: base64 in the three alignments (and
/// whole, padded), standard and URL-safe; percent-escaped (upper and lower case hex, and
/// `+` for spaces as forms send it); JSON-escaped.
fn encoded_forms(value: &str) -> Vec<String> {
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
    use base64::Engine;
    let bytes = value.as_bytes();
    let mut forms = vec![STANDARD.encode(bytes)];
    // Inside a longer text, the value starts 0, 1 or 2 bytes into a 3-byte group; the
    // base64 characters whose 6 bits all come from the value are the same wherever that
    // text is, and are what `Basic dXNlcjp…` shows of it.
    for skew in 0..3usize {
        let mut padded = vec![0u8; skew];
        padded.extend_from_slice(bytes);
        let text = STANDARD_NO_PAD.encode(&padded);
        let (first_bit, end_bit) = (8 * skew, 8 * (skew + bytes.len()));
        let core: String = text
            .chars()
            .enumerate()
            .filter(|(j, _)| 6 * j >= first_bit && 6 * j + 6 <= end_bit)
            .map(|(_, c)| c)
            .collect();
        forms.push(core);
    }
    let url_safe: Vec<String> = forms
        .iter()
        .map(|f| {
            f.replace('+', "-")
                .replace('/', "_")
                .trim_end_matches('=')
                .to_string()
        })
        .collect();
    forms.extend(url_safe);
    const ESCAPED: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~');
    let upper = percent_encoding::utf8_percent_encode(value, ESCAPED).to_string();
    forms.push(lower_hex_escapes(&upper));
    forms.push(upper.replace("%20", "+"));
    // Python's `quote` keeps `/` unless told otherwise.
    forms.push(upper.replace("%2F", "/"));
    forms.push(upper);
    let json = serde_json::to_string(value).expect("a string serializes");
    forms.push(json[1..json.len() - 1].to_string());
    forms.sort();
    forms.dedup();
    forms.retain(|f| f != value);
    forms
}

/// `%2F` → `%2f`, as some encoders write it.
fn lower_hex_escapes(escaped: &str) -> String {
    let mut out = String::with_capacity(escaped.len());
    let mut rest = escaped;
    while let Some(i) = rest.find('%') {
        out.push_str(&rest[..i]);
        let hex = rest.get(i + 1..i + 3).unwrap_or("");
        out.push('%');
        out.push_str(&hex.to_ascii_lowercase());
        rest = &rest[(i + 1 + hex.len()).min(rest.len())..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_every_occurrence_and_the_longest_value_first() {
        let m = Masker::new(["s3cr3t-token", "s3cr3t"]);
        assert_eq!(
            m.mask("a s3cr3t-token and s3cr3t, s3cr3ts3cr3t"),
            "a *** and ***, ******"
        );
        assert!(matches!(m.mask("nothing here"), Cow::Borrowed(_)));
    }

    #[test]
    fn short_values_are_left_alone_and_multi_line_values_masked_line_by_line() {
        let m = Masker::new([
            "1",
            "abc",
            "-----BEGIN KEY-----\nMIIBOgIBAAJBAK\n-----END KEY-----\n",
        ]);
        assert_eq!(m.mask("1 abc"), "1 abc");
        assert_eq!(m.mask("line: MIIBOgIBAAJBAK"), "line: ***");
        assert_eq!(m.mask("-----END KEY-----"), "***");
        assert!(Masker::new(["", "ab"]).is_empty());
    }

    #[test]
    fn a_value_cut_by_the_line_limit_is_masked_too() {
        let m = Masker::new(["supersecretvalue"]);
        let clipped = format!("xxxx supersec{CLIPPED}");
        assert_eq!(m.mask(&clipped), format!("xxxx ***{CLIPPED}"));
        // Too short a piece to tell from ordinary text.
        let clipped = format!("xxxx sup{CLIPPED}");
        assert_eq!(m.mask(&clipped), clipped);
    }

    #[test]
    fn unicode_values_are_matched_on_characters() {
        let m = Masker::new(["pässwörd"]);
        assert_eq!(m.mask("pw=pässwörd!"), "pw=***!");
        let clipped = format!("pw=pässw{CLIPPED}");
        assert_eq!(m.mask(&clipped), format!("pw=***{CLIPPED}"));
    }

    #[test]
    fn encoded_forms_are_masked() {
        use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
        use base64::Engine;
        let secret = "ghp_Zx9+/qT7 w?&=é\"\\ok";
        let m = Masker::new([secret]);
        // Base64, whole and inside a longer text at each alignment (Basic credentials).
        assert_eq!(m.mask(&STANDARD.encode(secret)), "***");
        for user in ["", "x", "xy", "x-access-token", "ci-bot"] {
            let basic = STANDARD.encode(format!("{user}:{secret}"));
            let line = format!("Authorization: Basic {basic}");
            let masked = m.mask(&line);
            assert!(masked.contains(MASK), "{user}: {masked}");
            // What is left is the user's part and the characters the value shares with
            // its neighbours in a 3-byte group.
            let visible = masked["Authorization: Basic ".len()..].replace(MASK, "");
            assert!(visible.len() <= (user.len() + 1) * 4 / 3 + 6, "{masked}");
        }
        let long = STANDARD.encode(format!("{{\"auths\":{{\"r\":{{\"auth\":\"{secret}\"}}}}}}"));
        assert!(m.mask(&long).contains(MASK), "a docker config in base64");
        assert!(m.mask(&URL_SAFE_NO_PAD.encode(secret)).contains(MASK));
        // URL- and JSON-escaped.
        const UNRESERVED: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
            .remove(b'-')
            .remove(b'.')
            .remove(b'_')
            .remove(b'~');
        let escaped = percent_encoding::utf8_percent_encode(secret, UNRESERVED).to_string();
        let keep_slash = escaped.replace("%2F", "/");
        assert_eq!(m.mask(&format!("url {keep_slash} ok")), "url *** ok");
        assert_eq!(m.mask(&format!("GET /?t={escaped} 200")), "GET /?t=*** 200");
        assert_eq!(
            m.mask(&format!("GET /?t={} 200", lower_hex_escapes(&escaped))),
            "GET /?t=*** 200"
        );
        let json = serde_json::json!({ "token": secret }).to_string();
        assert_eq!(m.mask(&json), r#"{"token":"***"}"#);
        // A short value's encoded forms under 6 characters are not masked: they would
        // match by chance (`YWJjZ` is the aligned core of `abcd`).
        let short = Masker::new(["abcd"]);
        assert_eq!(short.mask("YWJjZA== abcd xYWJjZx"), "*** *** xYWJjZx");
    }
}
