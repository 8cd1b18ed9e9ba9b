//! DNS-01 for the platform's own wildcard `*.<domain>`: the operator's hook writes the TXT
//! record (`HOOK set _acme-challenge.<domain>. <value>`, then `clear`), and the record
//! must be visible to the resolver the checks use before the CA is told to look.

use std::path::Path;
use std::time::Duration;

use super::check::Dns;

/// Longest a hook may run.
const HOOK_TIMEOUT: Duration = Duration::from_secs(120);
/// Longest wait for a TXT record to be seen.
const PROPAGATION: Duration = Duration::from_secs(120);

/// Runs the hook: `action` is `set` or `clear`.
pub async fn hook(program: &Path, action: &str, fqdn: &str, value: &str) -> Result<(), String> {
    let run = tokio::process::Command::new(program)
        .args([action, fqdn, value])
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(HOOK_TIMEOUT, run)
        .await
        .map_err(|_| format!("the DNS hook did not finish {action} within 120 s"))?
        .map_err(|e| format!("the DNS hook {} does not run: {e}", program.display()))?;
    if out.status.success() {
        return Ok(());
    }
    let said = String::from_utf8_lossy(&out.stderr);
    let said: String = said.trim().chars().take(500).collect();
    Err(format!(
        "the DNS hook's {action} failed ({}): {said}",
        out.status
    ))
}

/// Waits until `fqdn` has a TXT record `value` (as the resolver sees it).
pub async fn wait_visible(dns: &Dns, fqdn: &str, value: &str) -> Result<(), String> {
    let started = tokio::time::Instant::now();
    loop {
        if dns.txt(fqdn).await.iter().any(|v| v == value) {
            return Ok(());
        }
        if started.elapsed() > PROPAGATION {
            return Err(format!(
                "the TXT record {fqdn} is not visible to {} after 120 s",
                dns.server()
            ));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
