//! Webhook secrets and signatures in the Standard Webhooks format
//! (<https://www.standardwebhooks.com>), so receivers can verify with any of its libraries.
//!
//! A secret is `whsec_` followed by the base64 of the key bytes. A message is signed as
//! `v1,` + base64(HMAC-SHA256(key, "{webhook-id}.{webhook-timestamp}.{body}")).

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Prefix of every secret.
pub const SECRET_PREFIX: &str = "whsec_";
/// Key length of a generated secret, in bytes (Standard Webhooks recommends 24 to 64).
pub const GENERATED_KEY_BYTES: usize = 24;
/// Shortest key accepted from a client: below 128 bits an HMAC key can be guessed.
pub const MIN_KEY_BYTES: usize = 16;
/// Longest key accepted from a client (the SHA-256 block size).
pub const MAX_KEY_BYTES: usize = 64;

/// Why a client's secret was refused; the text is shown to the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    #[error("callback_secret must start with 'whsec_' followed by the base64 of the key")]
    MissingPrefix,
    #[error("callback_secret must be 'whsec_' followed by standard base64 (A-Z a-z 0-9 + / =)")]
    NotBase64,
    #[error(
        "callback_secret's key must be {MIN_KEY_BYTES} to {MAX_KEY_BYTES} bytes (got {0} bytes)"
    )]
    BadLength(usize),
}

/// A new random secret, `whsec_` + base64 of 24 random bytes.
pub fn generate_secret() -> String {
    let key: [u8; GENERATED_KEY_BYTES] = rand::random();
    format!("{SECRET_PREFIX}{}", STANDARD.encode(key))
}

/// The key bytes of a secret, if it is `whsec_<base64 of 16..=64 bytes>`.
pub fn parse_secret(secret: &str) -> Result<Vec<u8>, SecretError> {
    let encoded = secret
        .strip_prefix(SECRET_PREFIX)
        .ok_or(SecretError::MissingPrefix)?;
    let key = STANDARD
        .decode(encoded)
        .map_err(|_| SecretError::NotBase64)?;
    if !(MIN_KEY_BYTES..=MAX_KEY_BYTES).contains(&key.len()) {
        return Err(SecretError::BadLength(key.len()));
    }
    Ok(key)
}

/// The `webhook-signature` header value for one message.
pub fn sign(key: &[u8], webhook_id: &str, timestamp: i64, body: &[u8]) -> String {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(webhook_id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_secrets_parse_back_to_24_byte_keys() {
        let secret = generate_secret();
        assert!(secret.starts_with("whsec_"), "{secret}");
        assert_eq!(parse_secret(&secret).map(|k| k.len()), Ok(24));
        assert_ne!(generate_secret(), secret);
    }

    #[test]
    fn malformed_secrets_are_refused_with_the_reason() {
        assert_eq!(
            parse_secret("c2VjcmV0c2VjcmV0c2VjcmV0"),
            Err(SecretError::MissingPrefix)
        );
        assert_eq!(
            parse_secret("whsec_not base64!"),
            Err(SecretError::NotBase64)
        );
        assert_eq!(
            parse_secret(&format!("whsec_{}", STANDARD.encode([0u8; 8]))),
            Err(SecretError::BadLength(8))
        );
        assert_eq!(
            parse_secret(&format!("whsec_{}", STANDARD.encode([0u8; 65]))),
            Err(SecretError::BadLength(65))
        );
        assert!(parse_secret(&format!("whsec_{}", STANDARD.encode([7u8; 16]))).is_ok());
    }

    /// The example of the Standard Webhooks reference libraries.
    #[test]
    fn signs_like_the_standard_webhooks_reference() {
        let key = parse_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").expect("valid secret");
        let signature = sign(
            &key,
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(signature, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }
}
