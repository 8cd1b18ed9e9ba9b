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

/// The plan for `window`, asked at `now_us`, with `pick` in `0.0..1.0` choosing the
/// moment inside it (uniformly random, as RFC 9773 §4.2 asks, so a CA's certificates are
/// not all renewed at once); `check_interval` is the server's own round.
pub fn plan(window: &Window, now_us: i64, pick: f64, check_interval: Duration) -> Plan {
    let span = (window.end - window.start).max(0) as f64;
    let moment_us = (window.start as f64 + span * pick.clamp(0.0, 1.0)) as i64 * 1_000_000;
    if moment_us <= now_us {
        return Plan::Renew;
    }
    let poll = window
        .retry_after
        .clamp(check_interval.min(MAX_POLL), MAX_POLL);
    Plan::LookAt(moment_us.min(now_us + poll.as_micros() as i64))
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

    #[test]
    fn a_moment_in_the_past_renews_now() {
        let w = window(1000, 2000, 3600);
        assert_eq!(
            plan(&w, 1500 * S, 0.25, Duration::from_secs(60)),
            Plan::Renew
        );
        // A window that closed long ago (the CA wants it replaced) renews at once.
        assert_eq!(
            plan(&w, 9000 * S, 0.99, Duration::from_secs(60)),
            Plan::Renew
        );
    }

    #[test]
    fn a_moment_ahead_is_waited_for_but_the_ca_is_asked_again_meanwhile() {
        let w = window(10_000, 20_000, 3600);
        // The moment: 15,000 s; Retry-After: an hour from 1,000 s.
        assert_eq!(
            plan(&w, 1000 * S, 0.5, Duration::from_secs(60)),
            Plan::LookAt(4600 * S)
        );
        // Closer than the next poll: the moment itself.
        assert_eq!(
            plan(&w, 14_000 * S, 0.5, Duration::from_secs(60)),
            Plan::LookAt(15_000 * S)
        );
    }

    #[test]
    fn the_cas_retry_after_is_bounded() {
        // No Retry-After (0 s) is not a busy loop: at least the server's round.
        let w = window(100_000, 200_000, 0);
        assert_eq!(
            plan(&w, 0, 0.5, Duration::from_secs(300)),
            Plan::LookAt(300 * S)
        );
        // A week is at most six hours.
        let w = window(1_000_000, 2_000_000, 7 * 86_400);
        assert_eq!(
            plan(&w, 0, 0.0, Duration::from_secs(60)),
            Plan::LookAt(6 * 3600 * S)
        );
    }

    #[test]
    fn an_empty_or_inverted_window_is_its_start() {
        let w = window(5000, 4000, 86_400);
        assert_eq!(
            plan(&w, 1000 * S, 0.9, Duration::from_secs(60)),
            Plan::LookAt(5000 * S)
        );
    }
}
