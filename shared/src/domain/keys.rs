//! Virtual keys: generated with 256 bits of randomness, shown once, stored only as a SHA-256 hash.

use rand::RngCore;
use sha2::{Digest, Sha256};

/// Prefix every virtual key starts with, as OpenAI's and LiteLLM's do.
pub const KEY_PREFIX: &str = "sk-";
/// How many leading characters of a key are kept for display.
const DISPLAY_PREFIX_LEN: usize = 10;

/// A freshly generated key: the plain text goes to the caller once, the hash to the database.
pub struct NewVirtualKey {
    pub plain: String,
    pub hash: Vec<u8>,
    pub display_prefix: String,
}

/// Generates a new virtual key.
pub fn generate() -> NewVirtualKey {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let plain = format!("{KEY_PREFIX}{}", hex::encode(bytes));
    NewVirtualKey {
        hash: hash(&plain),
        display_prefix: plain[..DISPLAY_PREFIX_LEN].to_owned(),
        plain,
    }
}

/// The stored form of a key. Keys carry 256 bits of entropy, so a fast hash is safe here
/// (no dictionary to guess from), and it keeps authentication cheap on every request.
pub fn hash(plain: &str) -> Vec<u8> {
    Sha256::digest(plain.as_bytes()).to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_are_unique_prefixed_and_hash_to_the_stored_value() {
        let a = generate();
        let b = generate();
        assert_ne!(a.plain, b.plain);
        assert!(a.plain.starts_with(KEY_PREFIX));
        assert_eq!(a.plain.len(), 3 + 64);
        assert_eq!(a.hash, hash(&a.plain));
        assert_eq!(a.hash.len(), 32);
        assert!(a.plain.starts_with(&a.display_prefix));
    }
}
