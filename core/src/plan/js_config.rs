//! Reading a setting out of a framework's JS/TS config (`next.config.mjs`,
//! `svelte.config.js`…) without running it: good enough to find a literal value, and
//! nothing here guesses at one computed at build time.

/// The string literal after `key:` (or `key =`) in a JS/TS config, when it is one.
pub(super) fn quoted_value_after(text: &str, key: &str) -> Option<String> {
    let mut rest = text;
    while let Some(at) = rest.find(key) {
        let before_ok = rest[..at]
            .chars()
            .last()
            .is_none_or(|c| !(c.is_alphanumeric() || c == '_' || c == '$'));
        let after = rest[at + key.len()..].trim_start();
        rest = &rest[at + key.len()..];
        if !before_ok {
            continue;
        }
        let Some(after) = after.strip_prefix(':').or_else(|| after.strip_prefix('=')) else {
            continue;
        };
        let after = after.trim_start();
        let quote = after.chars().next()?;
        if !matches!(quote, '\'' | '"' | '`') {
            continue;
        }
        let body = &after[1..];
        let end = body.find(quote)?;
        return Some(body[..end].to_string());
    }
    None
}

/// Strips `//` and `/* */` comments well enough to search a config for a setting.
pub(super) fn without_comments(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    let mut quote: Option<char> = None;
    while let Some(c) = chars.next() {
        if let Some(q) = quote {
            out.push(c);
            if c == '\\' {
                if let Some(n) = chars.next() {
                    out.push(n);
                }
            } else if c == q {
                quote = None;
            }
            continue;
        }
        match (c, chars.peek()) {
            ('/', Some('/')) => {
                for n in chars.by_ref() {
                    if n == '\n' {
                        out.push('\n');
                        break;
                    }
                }
            }
            ('/', Some('*')) => {
                chars.next();
                let mut prev = ' ';
                for n in chars.by_ref() {
                    if prev == '*' && n == '/' {
                        break;
                    }
                    prev = n;
                }
            }
            ('\'' | '"' | '`', _) => {
                quote = Some(c);
                out.push(c);
            }
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_comments_and_values() {
        assert_eq!(
            quoted_value_after("a = { output: \"www\" }", "output").as_deref(),
            Some("www")
        );
        assert_eq!(
            quoted_value_after("myoutput: 'x', output: 'y'", "output").as_deref(),
            Some("y")
        );
        assert_eq!(
            without_comments("a // b\nc /* d */ e 'f//g'"),
            "a \nc  e 'f//g'"
        );
    }
}
