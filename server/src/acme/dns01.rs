//! DNS-01 for the platform's own wildcard `*.<domain>`: the TXT record
//! `_acme-challenge.<domain>.` is written by the operator's hook (`HOOK set|clear <fqdn>
//! <value>`) or by a dynamic update (RFC 2136) to the zone's primary server, signed with
//! a TSIG key (RFC 8945); it must be visible to the resolver the checks use before the CA
//! is told to look.

use std::path::Path;
use std::time::Duration;

use hickory_proto::op::{update_message, Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::TXT;
use hickory_proto::rr::{Name, RData, RecordSet, RecordType, TSigVerifier};

use super::check::Dns;
use crate::config::{DnsUpdate, DnsWriter};

/// Longest a hook may run.
const HOOK_TIMEOUT: Duration = Duration::from_secs(120);
/// Longest wait for a TXT record to be seen.
const PROPAGATION: Duration = Duration::from_secs(120);
/// Longest wait for a DNS server's answer to one update, and how many are sent.
const UPDATE_TIMEOUT: Duration = Duration::from_secs(5);
const UPDATE_TRIES: usize = 3;
/// The TXT record's TTL: the CA should not see an old value for long.
const TXT_TTL: u32 = 60;

/// Sets (`set: true`) or clears the TXT record `fqdn` = `value`.
pub async fn write(writer: &DnsWriter, set: bool, fqdn: &str, value: &str) -> Result<(), String> {
    match writer {
        DnsWriter::Hook(program) => {
            hook(program, if set { "set" } else { "clear" }, fqdn, value).await
        }
        DnsWriter::Rfc2136(update) => rfc2136(update, set, fqdn, value).await,
    }
}

/// Runs the hook: `action` is `set` or `clear`.
async fn hook(program: &Path, action: &str, fqdn: &str, value: &str) -> Result<(), String> {
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

/// Adds the TXT record to, or deletes it from, the zone on its primary server. With a
/// key, the server's answer must be signed with it.
async fn rfc2136(update: &DnsUpdate, set: bool, fqdn: &str, value: &str) -> Result<(), String> {
    let what = if set { "add" } else { "delete" };
    let zone = zone_of(update, fqdn);
    let (message, verifier) = update_message(update, &zone, set, fqdn, value)?;
    let sent = message
        .to_vec()
        .map_err(|e| format!("the DNS update of {fqdn}: {e}"))?;
    let (answer, bytes) = exchange(update, &sent, message.metadata.id).await?;
    match answer.metadata.response_code {
        ResponseCode::NoError => match verifier {
            Some(mut verifier) => verifier.verify(&bytes).map(|_| ()).map_err(|e| {
                format!(
                    "{}'s answer to the update of {fqdn} is not signed with the key: {e}",
                    update.server
                )
            }),
            None => Ok(()),
        },
        code => {
            // A TSIG failure says which (BADKEY, BADSIG, BADTIME) in the answer's TSIG.
            let tsig = answer
                .signature
                .as_ref()
                .and_then(|r| r.data.error.as_ref())
                .map(|e| format!(", TSIG {e:?}"))
                .unwrap_or_default();
            Err(format!(
                "{} refused to {what} the TXT record {fqdn}: {code}{tsig} ({})",
                update.server,
                refusal_fix(code, update, &zone)
            ))
        }
    }
}

/// The zone an update changes: `--acme-dns-zone`, else the name the challenge is for.
fn zone_of(update: &DnsUpdate, fqdn: &str) -> String {
    let zone = update
        .zone
        .as_deref()
        .unwrap_or_else(|| fqdn.strip_prefix("_acme-challenge.").unwrap_or(fqdn));
    format!("{}.", zone.trim_end_matches('.'))
}

/// The update message, signed when a key is given (and what checks the answer's
/// signature).
fn update_message(
    update: &DnsUpdate,
    zone: &str,
    set: bool,
    fqdn: &str,
    value: &str,
) -> Result<(Message, Option<TSigVerifier>), String> {
    let name = Name::from_ascii(fqdn).map_err(|e| format!("{fqdn}: {e}"))?;
    let zone = Name::from_ascii(zone).map_err(|e| format!("--acme-dns-zone {zone}: {e}"))?;
    if !zone.zone_of(&name) {
        return Err(format!(
            "{fqdn} is not in the zone {zone} (--acme-dns-zone names the zone that holds it)"
        ));
    }
    let mut rrset = RecordSet::with_ttl(name, RecordType::TXT, TXT_TTL);
    rrset.add_rdata(RData::TXT(TXT::new(vec![value.to_string()])));
    let mut message = if set {
        update_message::append(rrset, zone, false, false)
    } else {
        update_message::delete_by_rdata(rrset, zone, false)
    };
    let Some(key) = &update.tsig else {
        return Ok((message, None));
    };
    let signer = key.signer()?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let verifier = message
        .finalize(&signer, now)
        .map_err(|e| format!("signing the DNS update: {e}"))?;
    Ok((message, verifier))
}

/// Sends `sent` over UDP and waits for the server's answer to it (message `id`), a few
/// times; anything else that arrives is ignored.
async fn exchange(update: &DnsUpdate, sent: &[u8], id: u16) -> Result<(Message, Vec<u8>), String> {
    let failed = |e: std::io::Error| format!("the DNS server {}: {e}", update.server);
    let bind = if update.server.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    };
    let socket = tokio::net::UdpSocket::bind(bind)
        .await
        .map_err(|e| format!("a socket for the DNS update: {e}"))?;
    socket.connect(update.server).await.map_err(failed)?;
    let mut buf = vec![0u8; 4096];
    for _ in 0..UPDATE_TRIES {
        socket.send(sent).await.map_err(failed)?;
        let deadline = tokio::time::Instant::now() + UPDATE_TIMEOUT;
        while let Ok(received) = tokio::time::timeout_at(deadline, socket.recv(&mut buf)).await {
            let n = received.map_err(failed)?;
            let Ok(answer) = Message::from_vec(&buf[..n]) else {
                continue;
            };
            let m = &answer.metadata;
            if m.id == id && m.message_type == MessageType::Response && m.op_code == OpCode::Update
            {
                return Ok((answer, buf[..n].to_vec()));
            }
        }
    }
    Err(format!(
        "the DNS server {} did not answer the update ({UPDATE_TRIES} tries, {} s each)",
        update.server,
        UPDATE_TIMEOUT.as_secs()
    ))
}

/// What to fix when the server refuses an update.
fn refusal_fix(code: ResponseCode, update: &DnsUpdate, zone: &str) -> String {
    let key = update
        .tsig
        .as_ref()
        .map_or("unsigned updates".to_string(), |k| {
            format!("the key {}", k.name)
        });
    match code {
        ResponseCode::NotAuth => format!(
            "the server does not accept {key} (check --acme-dns-tsig-key, its secret and algorithm against the server's, and that the clocks agree within 5 minutes), or is not authoritative for the zone {zone} (--acme-dns-zone names the zone that holds the record)"
        ),
        ResponseCode::Refused => {
            format!("the zone's update policy does not let {key} change this record")
        }
        ResponseCode::NotZone => format!(
            "the record is not in the zone {zone}, or the server is not its primary (--acme-dns-zone)"
        ),
        _ => "see the DNS server's log".to_string(),
    }
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
