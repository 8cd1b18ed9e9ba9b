//! Rate limits and memory budgets shared by every request.

use std::net::IpAddr;
use std::num::NonZeroU32;

use cdeploy_core::api::codes;

use super::error::{Error, Kind};

/// Memory all batch uploads together may hold members in (256 MiB, in KiB).
pub const BATCH_MEMORY_KIB: usize = 256 * 1024;

/// Failed authentications allowed per client address before it gets `429`s: enough for
/// a person fixing a typo, far too few to guess a token.
pub type AuthLimiter = governor::DefaultKeyedRateLimiter<IpAddr>;

pub fn auth_limiter() -> AuthLimiter {
    let per_minute = NonZeroU32::new(20).expect("non-zero");
    governor::RateLimiter::keyed(governor::Quota::per_minute(per_minute))
}

/// Counts one failed authentication of `ip` (every route that authenticates shares the
/// budget): `Err` is the `429` saying `message`. Past 100,000 addresses the ones with
/// nothing left to count are dropped first, so a flood from many addresses holds no
/// memory.
pub fn count_failure(limiter: &AuthLimiter, ip: IpAddr, message: &str) -> Result<(), Error> {
    if limiter.len() > 100_000 {
        limiter.retain_recent();
    }
    limiter
        .check_key(&ip)
        .map_err(|not_until| rate_limited(&not_until, message))
}

/// Tokens per second and burst, per token: a token that floods the API gets `429`s
/// with `Retry-After`, and others are not slowed.
pub type TokenLimiter = governor::DefaultKeyedRateLimiter<String>;

pub fn token_limiter(rate: NonZeroU32, burst: NonZeroU32) -> TokenLimiter {
    governor::RateLimiter::keyed(governor::Quota::per_second(rate).allow_burst(burst))
}

/// Too many requests, retry after the whole seconds until a limiter lets the next one
/// through (rounded up: a client that waits as told is let in).
pub fn rate_limited(
    not_until: &governor::NotUntil<governor::clock::QuantaInstant>,
    message: &str,
) -> Error {
    let wait = not_until.wait_time_from(governor::clock::Clock::now(
        &governor::clock::DefaultClock::default(),
    ));
    let mut e = Error::new(Kind::RateLimited, codes::RATE_LIMITED, message);
    e.retry_after = Some(wait.as_secs_f64().ceil().max(1.0) as u64);
    e
}
