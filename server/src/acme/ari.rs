//! ACME Renewal Information (ARI, RFC 9773): when the CA's directory offers it, a
//! certificate is renewed at a random moment inside the window the CA suggests for it
//! (which the CA may move earlier, e.g. before revoking it), and the order names the
//! certificate it replaces. A CA without it, or one that does not answer, leaves the
//! renewal at two thirds of the lifetime.

use std::time::Duration;

use instant_acme::{Account, CertificateIdentifier, RenewalInfo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

/// The longest wait before the CA is asked again, whatever its `Retry-After` says (the
/// shortest is the server's check interval, `--acme-interval-secs`).
const MAX_POLL: Duration = Duration::from_secs(6 * 3600);

/// What to do about a certificate the CA has a window for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Renew now (the moment picked in the window has come), replacing this one.
    Renew,
    /// Ask again at this time (unix µs): the moment picked in the window, or sooner when
    /// the CA asks to be polled sooner.
    LookAt(i64),
}

/// What the CA said about a certificate.
pub struct Window {
    /// The suggested window, unix seconds.
    pub start: i64,
    pub end: i64,
    /// When to ask again (the CA's `Retry-After`).
    pub retry_after: Duration,
    /// The certificate, as orders that replace it name it.
    pub id: CertificateIdentifier<'static>,
}

impl Window {
    /// The window for the report, `start – end` in RFC 3339.
    pub fn describe(&self) -> String {
        let at = |s: i64| {
            chrono::DateTime::from_timestamp(s, 0)
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
                .unwrap_or_default()
        };
        format!("{} – {}", at(self.start), at(self.end))
    }
}

/// The CA's window for the leaf of `chain_pem`: `Ok(None)` when the CA does not offer
/// ARI, an error when it offers it and did not answer (or the certificate names no
/// authority key, which ARI needs).
pub async fn window(account: &Account, chain_pem: &str) -> Result<Option<Window>, String> {
    let leaf = CertificateDer::pem_slice_iter(chain_pem.as_bytes())
        .next()
        .ok_or("the stored certificate is empty")?
        .map_err(|e| e.to_string())?;
    let id = CertificateIdentifier::try_from(&leaf)?.into_owned();
    let (info, retry_after): (RenewalInfo, Duration) = match account.renewal_info(&id).await {
        Ok(answer) => answer,
        Err(instant_acme::Error::Unsupported(_)) => return Ok(None),
        Err(e) => return Err(format!("the CA's renewal information: {e}")),
    };
    Ok(Some(Window {
        start: info.suggested_window.start.unix_timestamp(),
        end: info.suggested_window.end.unix_timestamp(),
        retry_after,
        id,
    }))
}

/// The plan for `window`, for a certificate valid from `not_before` to `not_after`
/// (unix seconds), asked at `now_us`; `check_interval` is the server's own round.
/// `None`: a window not to follow (one that ends before it starts, which RFC 9773 calls
/// malformed, or opens only once the certificate has expired).
///
/// The moment is the same at every look at one certificate: picked inside the window
/// from the certificate's identifier (RFC 9773 §4.2 asks for a uniformly random moment,
/// kept), so a CA's certificates spread over their windows. It is never later than three
/// quarters into the lifetime (a quarter is left to retry in, whatever the CA says) and
/// never sooner than a tenth into it, at most 6 hours (a CA that keeps moving new
/// certificates' windows into the past gets an order that often, not every round).
pub fn plan(
    window: &Window,
    (not_before, not_after): (i64, i64),
    now_us: i64,
    check_interval: Duration,
) -> Option<Plan> {
    if window.end <= window.start || window.start >= not_after {
        return None;
    }
    let lifetime = (not_after - not_before).max(0);
    let span = (window.end - window.start) as f64;
    let moment = (window.start + (span * pick(&window.id)) as i64)
        .min(not_after - lifetime / 4)
        .max(not_before + (lifetime / 10).min(6 * 3600));
    let moment_us = moment.saturating_mul(1_000_000);
    if moment_us <= now_us {
        return Some(Plan::Renew);
    }
    let poll = window
        .retry_after
        .clamp(check_interval.min(MAX_POLL), MAX_POLL);
    Some(Plan::LookAt(
        moment_us.min(now_us.saturating_add(poll.as_micros() as i64)),
    ))
}

/// Where in its window a certificate is renewed, in `0.0..1.0`: drawn from its
/// identifier (uniform over certificates, the same at every look).
fn pick(id: &CertificateIdentifier<'_>) -> f64 {
    let digest = cdeploy_core::sha256_hex(
        format!("{}.{}", id.authority_key_identifier, id.serial).as_bytes(),
    );
    let n = u64::from_str_radix(&digest[..16], 16).unwrap_or(0);
    (n >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(start: i64, end: i64, retry_after: u64) -> Window {
        Window {
            start,
            end,
            retry_after: Duration::from_secs(retry_after),
            id: CertificateIdentifier {
                authority_key_identifier: "aki".into(),
                serial: "serial".into(),
            },
        }
    }

    const S: i64 = 1_000_000;
    const MINUTE: Duration = Duration::from_secs(60);
    /// A 90-day certificate issued at 0.
    const CERT: (i64, i64) = (0, 90 * 86_400);
    const DAY: i64 = 86_400;

    #[test]
    fn the_moment_is_inside_the_window_and_the_same_at_every_look() {
        let w = window(50 * DAY, 60 * DAY, 6 * 3600);
        let p = pick(&w.id);
        assert!((0.0..1.0).contains(&p));
        let moment = 50 * DAY + (10.0 * DAY as f64 * p) as i64;
        // Looked at just before the moment: that moment, whatever the time of the look.
        for before in [1, 60, 3600] {
            assert_eq!(
                plan(&w, CERT, (moment - before) * S, MINUTE),
                Some(Plan::LookAt(moment * S))
            );
        }
        assert_eq!(plan(&w, CERT, moment * S, MINUTE), Some(Plan::Renew));
        // Another certificate, another moment.
        let mut other = window(50 * DAY, 60 * DAY, 6 * 3600);
        other.id.serial = "other".into();
        assert_ne!(pick(&other.id), p);
    }

    #[test]
    fn a_window_in_the_past_renews_now_but_not_a_new_certificate() {
        let w = window(-2 * DAY, -DAY, 86_400);
        assert_eq!(plan(&w, CERT, 30 * DAY * S, MINUTE), Some(Plan::Renew));
        // Issued an hour ago: renewed 6 hours after its issue (a tenth of a 90-day
        // lifetime is more).
        assert_eq!(
            plan(&w, CERT, 3600 * S, MINUTE),
            Some(Plan::LookAt(6 * 3600 * S))
        );
        // A 90-second certificate: a tenth, 9 s.
        assert_eq!(plan(&w, (0, 90), 3 * S, MINUTE), Some(Plan::LookAt(9 * S)));
    }

    #[test]
    fn a_moment_ahead_is_waited_for_and_asked_about_meanwhile() {
        let w = window(50 * DAY, 50 * DAY + 1, 3600);
        assert_eq!(
            plan(&w, CERT, DAY * S, MINUTE),
            Some(Plan::LookAt((DAY + 3600) * S))
        );
    }

    #[test]
    fn the_cas_retry_after_is_bounded() {
        // No Retry-After (0 s) is not a busy loop: at least the server's round.
        let w = window(50 * DAY, 60 * DAY, 0);
        assert_eq!(
            plan(&w, CERT, DAY * S, Duration::from_secs(300)),
            Some(Plan::LookAt((DAY + 300) * S))
        );
        // A week is at most six hours.
        let w = window(50 * DAY, 60 * DAY, 7 * 86_400);
        assert_eq!(
            plan(&w, CERT, DAY * S, MINUTE),
            Some(Plan::LookAt((DAY + 6 * 3600) * S))
        );
    }

    #[test]
    fn a_late_window_still_leaves_a_quarter_of_the_lifetime() {
        let w = window(80 * DAY, 89 * DAY, 6 * 3600);
        let three_quarters = 90 * DAY * 3 / 4;
        assert_eq!(
            plan(&w, CERT, (three_quarters - 10) * S, MINUTE),
            Some(Plan::LookAt(three_quarters * S))
        );
        assert_eq!(
            plan(&w, CERT, three_quarters * S, MINUTE),
            Some(Plan::Renew)
        );
    }

    #[test]
    fn a_malformed_window_or_one_after_expiry_is_not_followed() {
        assert_eq!(plan(&window(60 * DAY, 50 * DAY, 60), CERT, 0, MINUTE), None);
        assert_eq!(plan(&window(60 * DAY, 60 * DAY, 60), CERT, 0, MINUTE), None);
        assert_eq!(plan(&window(90 * DAY, 95 * DAY, 60), CERT, 0, MINUTE), None);
        // Extremes do not overflow.
        assert_eq!(
            plan(
                &window(i64::MIN / 2, i64::MAX / 2, u64::MAX / 4),
                CERT,
                0,
                MINUTE
            ),
            Some(Plan::LookAt(6 * 3600 * S))
        );
    }
}
