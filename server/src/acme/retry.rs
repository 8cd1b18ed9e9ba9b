//! When a CA that refused with its rate limit may be asked again.

use std::time::Duration;

/// The longest wait a CA's rate limit imposes here (Let's Encrypt's longest window is a
/// week).
const MAX_RATE_LIMIT_WAIT: Duration = Duration::from_secs(8 * 24 * 3600);

/// When a CA that refused with its rate limit (`urn:ietf:params:acme:error:rateLimited`)
/// may be asked again (unix µs): the time its words name (`retry after 2026-01-05
/// 12:34:56 UTC`, as Let's Encrypt says it), at least an hour and at most 8 days from
/// `now_us`; `None` for any other error.
pub fn rate_limited_until(ca_error: &str, now_us: i64) -> Option<i64> {
    if !ca_error.contains("error:rateLimited") {
        return None;
    }
    let hour = now_us + 3600 * 1_000_000;
    let latest = now_us + MAX_RATE_LIMIT_WAIT.as_micros() as i64;
    let named = ca_error
        .to_ascii_lowercase()
        .split_once("retry after ")
        .and_then(|(_, rest)| {
            let stamp = rest.get(..19)?;
            chrono::NaiveDateTime::parse_from_str(stamp, "%Y-%m-%d %H:%M:%S").ok()
        })
        .map(|t| t.and_utc().timestamp_micros());
    Some(named.unwrap_or(hour).clamp(hour, latest))
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1_000_000;

    #[test]
    fn a_rate_limit_waits_until_the_ca_says() {
        let now = chrono::DateTime::parse_from_rfc3339("2026-12-06T00:00:00Z")
            .unwrap()
            .timestamp()
            * S;
        let le = "API error: too many certificates (5) already issued for this exact set of identifiers in the last 168h0m0s, retry after 2026-12-08 06:30:00 UTC: see https://letsencrypt.org/docs/rate-limits/ (urn:ietf:params:acme:error:rateLimited)";
        assert_eq!(
            rate_limited_until(le, now),
            Some(now + (2 * 86_400 + 6 * 3600 + 1800) * S)
        );
        // No time named, or one in the past: an hour.
        let bare = "API error: slow down (urn:ietf:params:acme:error:rateLimited)";
        assert_eq!(rate_limited_until(bare, now), Some(now + 3600 * S));
        let past = le.replace("2026-12-08", "2026-01-01");
        assert_eq!(rate_limited_until(&past, now), Some(now + 3600 * S));
        // A year away: at most eight days.
        let far = le.replace("2026-12-08", "2027-12-08");
        assert_eq!(rate_limited_until(&far, now), Some(now + 8 * 86_400 * S));
        // Other errors keep the usual backoff.
        let other = "API error: nope (urn:ietf:params:acme:error:unauthorized)";
        assert_eq!(rate_limited_until(other, now), None);
    }
}
