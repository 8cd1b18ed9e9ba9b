//! The Redis Streams client of the log bus, shared by the standalone builder (which
//! appends through a [`Producer`](super::producer::Producer)) and the server's
//! [`RedisBus`](super::RedisBus) (which appends its own events and tails the stream for
//! WebSocket clients).
//!
//! Each deployment has two keys, hash-tagged so they live in one cluster slot:
//! * `cdeploy:{<id>}:events` — a stream whose entry ids are `<seq>-0`, so `after=<seq>`
//!   maps directly onto `XREAD … <seq>-0`; fields `ts` and `body` (the event's JSON
//!   without `seq`/`ts`).
//! * `cdeploy:{<id>}:meta` — a hash with the last `seq`, `closed` once a terminal event
//!   is in, and per-producer `p:<producer>` (last accepted message number) for dedupe.
//!
//! Appends run as one Lua script, so numbering is atomic across every producer (builder,
//! server replicas): gap-free, in order, nothing after the terminal event. A producer
//! whose reply was lost retries the same `(producer, n)` and gets the original `seq`
//! back instead of a duplicate. A producer also passes the highest `seq` it knows as a
//! floor, so a Redis that restarted without its data never hands out a `seq` twice.
//! Both keys are capped (`MAXLEN ~`) and expire (`EXPIRE`, refreshed on every append);
//! the server archives finished logs to storage, which keeps them after the TTL.

use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::streams::{StreamId, StreamRangeReply, StreamReadOptions, StreamReadReply};
use redis::{AsyncCommands, AsyncConnectionConfig, Client, RedisResult, Script, Value};

use cdeploy_core::event::{Event, EventBody};

/// Entries kept per deployment stream (approximate trim).
pub const DEFAULT_MAXLEN: u64 = 100_000;
/// Seconds a deployment's keys live after its last event.
pub const DEFAULT_TTL_SECS: u64 = 7 * 24 * 3600;

const APPEND: &str = r#"
local meta = KEYS[2]
local producer = ARGV[1]
if producer ~= '' then
  local last = tonumber(redis.call('HGET', meta, 'p:' .. producer) or '0')
  if tonumber(ARGV[2]) <= last then
    return {'dup', redis.call('HGET', meta, 'a:' .. producer) or '0'}
  end
end
if redis.call('HEXISTS', meta, 'closed') == 1 then
  return {'closed', redis.call('HGET', meta, 'seq') or '0'}
end
local seq = tonumber(redis.call('HGET', meta, 'seq') or '0')
local floor = tonumber(ARGV[6])
if floor > seq then seq = floor end
seq = seq + 1
redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[7], seq .. '-0', 'ts', ARGV[3], 'body', ARGV[4])
redis.call('HSET', meta, 'seq', seq)
if producer ~= '' then
  redis.call('HSET', meta, 'p:' .. producer, ARGV[2], 'a:' .. producer, seq)
end
if ARGV[5] == '1' then redis.call('HSET', meta, 'closed', seq) end
redis.call('EXPIRE', KEYS[1], ARGV[8])
redis.call('EXPIRE', meta, ARGV[8])
return {'ok', tostring(seq)}
"#;

/// ARGV: maxlen, ttl, then (seq, ts, body, terminal) for each event, oldest first.
const RESTORE: &str = r#"
local meta = KEYS[2]
local cur = tonumber(redis.call('HGET', meta, 'seq') or '0')
for i = 3, #ARGV, 4 do
  local seq = tonumber(ARGV[i])
  if seq > cur then
    redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], seq .. '-0', 'ts', ARGV[i + 1], 'body', ARGV[i + 2])
    cur = seq
    if ARGV[i + 3] == '1' then redis.call('HSET', meta, 'closed', seq) end
  end
end
redis.call('HSET', meta, 'seq', cur)
redis.call('EXPIRE', KEYS[1], ARGV[2])
redis.call('EXPIRE', meta, ARGV[2])
return 'ok'
"#;

pub fn stream_key(id: &str) -> String {
    format!("cdeploy:{{{id}}}:events")
}

pub fn meta_key(id: &str) -> String {
    format!("cdeploy:{{{id}}}:meta")
}

/// How an append ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Appended {
    /// Stored as this event.
    Ok(Event),
    /// This producer's message was stored before (its reply was lost) with this `seq`.
    Duplicate(u64),
    /// The log already ended with a terminal event; nothing was stored.
    Closed,
}

/// Why a Redis URL or client could not be made from the settings.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("REDIS_PORT: {0:?} is not a port number")]
    Port(String),
    #[error("REDIS_HOST: {host:?}: {reason}")]
    Host { host: String, reason: String },
    /// The private CA (`REDIS_CA_CERT`) does not read.
    #[error("{}: {source}", path.display())]
    CaCert {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    /// No client for the URL (shown redacted).
    #[error("{url}: {source}")]
    Client {
        url: String,
        source: redis::RedisError,
    },
}

/// The Redis URL from the environment: `REDIS_URL`, else the seed's
/// `REDIS_HOST`/`REDIS_PORT`/`REDIS_USERNAME`/`REDIS_PASSWORD` (`REDIS_TLS=1` for TLS).
/// `None` when neither is set.
pub fn url_from_env(get: impl Fn(&str) -> Option<String>) -> Option<Result<String, SetupError>> {
    let get = |k: &str| get(k).filter(|v| !v.is_empty());
    if let Some(url) = get("REDIS_URL") {
        return Some(Ok(url));
    }
    let host = get("REDIS_HOST")?;
    let port = get("REDIS_PORT").unwrap_or_else(|| "6379".into());
    if port.parse::<u16>().is_err() {
        return Some(Err(SetupError::Port(port)));
    }
    let tls = matches!(get("REDIS_TLS").as_deref(), Some("1" | "true" | "yes"));
    let scheme = if tls { "rediss" } else { "redis" };
    let mut url = match url::Url::parse(&format!("{scheme}://{host}:{port}/")) {
        Ok(u) => u,
        Err(e) => {
            return Some(Err(SetupError::Host {
                host,
                reason: e.to_string(),
            }))
        }
    };
    let user = get("REDIS_USERNAME");
    let password = get("REDIS_PASSWORD");
    if user.is_some() || password.is_some() {
        // The url crate percent-encodes what needs it.
        let _ = url.set_username(user.as_deref().unwrap_or("default"));
        let _ = url.set_password(password.as_deref());
    }
    Some(Ok(url.to_string()))
}

pub use cdeploy_core::mask::redact_url as redact;

/// A client for `url`. For `rediss://` with a private CA, pass its PEM file (the
/// `REDIS_CA_CERT` variable); otherwise the web PKI roots are trusted.
pub fn client(url: &str, ca_cert: Option<&Path>) -> Result<Client, SetupError> {
    let refused = |source| SetupError::Client {
        url: redact(url),
        source,
    };
    if url.starts_with("rediss://") {
        // rustls needs one process-wide crypto provider; the first caller wins.
        let _ = rustls::crypto::ring::default_provider().install_default();
        if let Some(ca) = ca_cert {
            let pem = std::fs::read(ca).map_err(|source| SetupError::CaCert {
                path: ca.to_path_buf(),
                source,
            })?;
            return Client::build_with_tls(
                url,
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(pem),
                },
            )
            .map_err(refused);
        }
    }
    Client::open(url).map_err(refused)
}

/// One connection to the bus, shared by clones. It reconnects by itself after Redis
/// restarts or the network drops: a call made while Redis is away fails, and the next
/// one goes out on a fresh connection.
#[derive(Clone)]
pub struct LogStream {
    client: Client,
    conn: ConnectionManager,
    maxlen: u64,
    ttl_secs: u64,
}

impl LogStream {
    /// Never waits for Redis: the connection is made on first use.
    pub fn new(client: Client) -> RedisResult<Self> {
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(3)))
            .set_response_timeout(Some(Duration::from_secs(5)))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_secs(1));
        let conn = ConnectionManager::new_lazy_with_config(client.clone(), config)?;
        Ok(LogStream {
            client,
            conn,
            maxlen: DEFAULT_MAXLEN,
            ttl_secs: DEFAULT_TTL_SECS,
        })
    }

    pub fn with_limits(mut self, maxlen: u64, ttl_secs: u64) -> Self {
        self.maxlen = maxlen.max(100);
        self.ttl_secs = ttl_secs.max(60);
        self
    }

    /// Whether Redis answers.
    pub async fn ping(&self) -> RedisResult<()> {
        let mut conn = self.conn.clone();
        redis::cmd("PING").query_async::<()>(&mut conn).await
    }

    /// Appends one event. `producer` is `(producer id, message number)` for dedupe of
    /// retries; `floor` is the highest `seq` the caller has seen for this deployment.
    pub async fn append(
        &self,
        id: &str,
        producer: Option<(&str, u64)>,
        floor: u64,
        ts: &str,
        body: &EventBody,
    ) -> RedisResult<Appended> {
        let json = serde_json::to_string(body).expect("events serialize");
        let (pname, n) = producer.unwrap_or(("", 0));
        let mut conn = self.conn.clone();
        let reply: (String, String) = append_script()
            .key(stream_key(id))
            .key(meta_key(id))
            .arg(pname)
            .arg(n)
            .arg(ts)
            .arg(&json)
            .arg(if body.terminal_status().is_some() {
                "1"
            } else {
                "0"
            })
            .arg(floor)
            .arg(self.maxlen)
            .arg(self.ttl_secs)
            .invoke_async(&mut conn)
            .await?;
        let seq: u64 = reply.1.parse().unwrap_or(0);
        Ok(match reply.0.as_str() {
            "ok" => Appended::Ok(Event {
                seq,
                ts: ts.to_string(),
                body: body.clone(),
            }),
            "dup" => Appended::Duplicate(seq),
            _ => Appended::Closed,
        })
    }

    /// Puts back events a Redis that restarted without its data has lost, with their
    /// original `seq` (only those after what the stream holds now). Atomic.
    pub async fn restore(&self, id: &str, events: &[Event]) -> RedisResult<()> {
        if events.is_empty() {
            return Ok(());
        }
        let mut script = restore_script().key(stream_key(id));
        script.key(meta_key(id)).arg(self.maxlen).arg(self.ttl_secs);
        for e in events {
            let json = serde_json::to_string(&e.body).expect("events serialize");
            script
                .arg(e.seq)
                .arg(&e.ts)
                .arg(json)
                .arg(if e.is_terminal() { "1" } else { "0" });
        }
        let mut conn = self.conn.clone();
        script.invoke_async::<()>(&mut conn).await
    }

    /// Notes that the deployment is being canceled, so its builder, stopped by SIGTERM,
    /// reports `canceled` rather than an unexplained stop.
    pub async fn request_cancel(&self, id: &str) -> RedisResult<()> {
        let mut conn = self.conn.clone();
        conn.hset::<_, _, _, ()>(meta_key(id), "cancel", 1).await
    }

    pub async fn cancel_requested(&self, id: &str) -> RedisResult<bool> {
        let mut conn = self.conn.clone();
        conn.hexists(meta_key(id), "cancel").await
    }

    /// Whether the log holds its terminal event.
    pub async fn closed(&self, id: &str) -> RedisResult<bool> {
        let mut conn = self.conn.clone();
        conn.hexists(meta_key(id), "closed").await
    }

    /// The last `seq` Redis holds for the deployment (`None`: it knows nothing of it).
    pub async fn last_seq(&self, id: &str) -> RedisResult<Option<u64>> {
        let mut conn = self.conn.clone();
        let seq: Option<u64> = conn.hget(meta_key(id), "seq").await?;
        Ok(seq)
    }

    /// Events after `after`, at most `count`, oldest first.
    pub async fn range(&self, id: &str, after: u64, count: usize) -> RedisResult<Vec<Event>> {
        let mut conn = self.conn.clone();
        let reply: StreamRangeReply = conn
            .xrange_count(stream_key(id), format!("({after}-0"), "+", count)
            .await?;
        Ok(reply.ids.iter().filter_map(parse_entry).collect())
    }

    /// Every event after `after`, read in pages.
    pub async fn range_all(&self, id: &str, mut after: u64) -> RedisResult<Vec<Event>> {
        let mut all = Vec::new();
        loop {
            let page = self.range(id, after, 5000).await?;
            let Some(last) = page.last() else {
                return Ok(all);
            };
            after = last.seq;
            let full = page.len() == 5000;
            all.extend(page);
            if !full {
                return Ok(all);
            }
        }
    }

    /// A dedicated connection for blocking reads ([`Tail::read`]): a blocking command
    /// must not hold up the shared connection's other calls.
    pub async fn tail(&self) -> RedisResult<Tail> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(3)))
            .set_response_timeout(Some(Tail::BLOCK + Duration::from_secs(5)));
        let conn = self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        Ok(Tail { conn })
    }
}

fn append_script() -> &'static Script {
    static S: OnceLock<Script> = OnceLock::new();
    S.get_or_init(|| Script::new(APPEND))
}

fn restore_script() -> &'static Script {
    static S: OnceLock<Script> = OnceLock::new();
    S.get_or_init(|| Script::new(RESTORE))
}

/// A blocking reader of one deployment's stream.
pub struct Tail {
    conn: MultiplexedConnection,
}

impl Tail {
    pub const BLOCK: Duration = Duration::from_secs(5);

    /// Events after `after`, waiting up to [`Tail::BLOCK`] for the first one; empty when
    /// nothing arrived in that time.
    pub async fn read(&mut self, id: &str, after: u64) -> RedisResult<Vec<Event>> {
        let opts = StreamReadOptions::default()
            .block(Self::BLOCK.as_millis() as usize)
            .count(1000);
        let reply: Option<StreamReadReply> = self
            .conn
            .xread_options(&[stream_key(id)], &[format!("{after}-0")], &opts)
            .await?;
        Ok(reply
            .map(|r| {
                r.keys
                    .iter()
                    .flat_map(|k| k.ids.iter().filter_map(parse_entry))
                    .collect()
            })
            .unwrap_or_default())
    }
}

fn field(entry: &StreamId, name: &str) -> Option<String> {
    match entry.map.get(name)? {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}

fn parse_entry(entry: &StreamId) -> Option<Event> {
    let seq = entry.id.split_once('-')?.0.parse().ok()?;
    let ts = field(entry, "ts")?;
    let body: EventBody = serde_json::from_str(&field(entry, "body")?).ok()?;
    Some(Event { seq, ts, body })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_urls() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        // The URL, or the error's words.
        let read = |pairs: &'static [(&'static str, &'static str)]| {
            url_from_env(env(pairs)).map(|r| r.map_err(|e| e.to_string()))
        };
        assert_eq!(read(&[]), None);
        assert_eq!(
            read(&[("REDIS_URL", "redis://r:1/2"), ("REDIS_HOST", "x")]),
            Some(Ok("redis://r:1/2".into()))
        );
        assert_eq!(
            read(&[
                ("REDIS_HOST", "cache.internal"),
                ("REDIS_PASSWORD", "p@ss/word"),
                ("REDIS_TLS", "1")
            ]),
            Some(Ok(
                "rediss://default:p%40ss%2Fword@cache.internal:6379/".into()
            ))
        );
        assert_eq!(
            read(&[("REDIS_HOST", "h"), ("REDIS_PORT", "http")]),
            Some(Err("REDIS_PORT: \"http\" is not a port number".into()))
        );
        assert_eq!(
            redact("redis://u:secret@h:1/"),
            "redis://u:***@h:1/".to_string()
        );
    }
}
