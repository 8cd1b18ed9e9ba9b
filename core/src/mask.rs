//! Masks stored secrets in build log text: every occurrence of a value a build was given
//! is replaced by [`MASK`] before the line leaves the builder, so the live stream, the
//! bus and the archive never hold it. Only verbatim occurrences can be caught: a value
//! the build encodes (base64, URL-escaping), reverses or prints in pieces gets through.

use std::borrow::Cow;

use aho_corasick::{AhoCorasick, MatchKind};

/// What a masked value reads as.
pub const MASK: &str = "***";

/// Shorter values (and lines of multi-line values) are not masked: masking `1` or
/// `true` would blank every log line that holds the character, and reveal it anyway.
pub const MIN_MASKED_LEN: usize = 4;

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
            patterns.push(whole.to_string());
            patterns.extend(whole.split(['\n', '\r']).map(|l| l.trim_end().to_string()));
        }
        patterns.retain(|p| p.chars().count() >= MIN_MASKED_LEN);
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
}
