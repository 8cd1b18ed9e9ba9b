//! Signatures as the Standard Webhooks specification has them
//! (<https://www.standardwebhooks.com>): the secret is `whsec_` and the base64 of the
//! key; the signed content is `<webhook-id>.<webhook-timestamp>.<body>`; the
//! `webhook-signature` header is `v1,` and the base64 of its HMAC-SHA256. A receiver
//! checks it with any of the spec's libraries, or with these few lines.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// What a secret starts with.
pub const SECRET_PREFIX: &str = "whsec_";

/// A new signing secret: 32 random characters (165 bits) as the key.
pub fn new_secret() -> String {
    let key = cdeploy_core::ids::random_id(32);
    format!("{SECRET_PREFIX}{}", STANDARD.encode(key.as_bytes()))
}

/// The `webhook-signature` value of one attempt at a message. `None` when `secret` is
/// not a secret this module made (a row altered by hand).
pub fn signature(secret: &str, id: &str, timestamp: i64, body: &[u8]) -> Option<String> {
    let key = STANDARD.decode(secret.strip_prefix(SECRET_PREFIX)?).ok()?;
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).ok()?;
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    Some(format!(
        "v1,{}",
        STANDARD.encode(mac.finalize().into_bytes())
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_specification_s_example_signs_as_it_says() {
        // The example of the Standard Webhooks specification (its "Signature scheme").
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let body = br#"{"test": 2432232314}"#;
        assert_eq!(
            signature(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body).unwrap(),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn new_secrets_sign_and_differ() {
        let (a, b) = (new_secret(), new_secret());
        assert_ne!(a, b);
        assert!(signature(&a, "m", 1, b"{}").is_some());
        assert_ne!(signature(&a, "m", 1, b"{}"), signature(&b, "m", 1, b"{}"));
        assert_eq!(signature("not-a-secret", "m", 1, b"{}"), None);
    }
}
