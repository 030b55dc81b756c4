//! Admin keys: their roles, their names, and how they are generated. They are hashed and shown
//! once like team keys; their own prefix tells them apart before any lookup.

use std::fmt;

use rand::RngCore;
use serde::{Deserialize, Serialize};

use crate::domain::keys::{self, NewVirtualKey};

/// What an admin key may do; each role may do everything the roles below it may.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    sqlx::Type,
    utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
#[sqlx(type_name = "text", rename_all = "lowercase")]
pub enum AdminRole {
    /// Reads everything; changes nothing.
    Viewer,
    /// Reads everything; adds credits and sets teams' alerts and refills.
    Billing,
    /// Everything, including admin keys.
    Owner,
}

impl AdminRole {
    /// Every role, least first.
    pub const ALL: [AdminRole; 3] = [AdminRole::Viewer, AdminRole::Billing, AdminRole::Owner];

    /// The stored and wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            AdminRole::Viewer => "viewer",
            AdminRole::Billing => "billing",
            AdminRole::Owner => "owner",
        }
    }

    /// Whether a key of this role may do what `required` is needed for.
    pub fn allows(self, required: AdminRole) -> bool {
        self >= required
    }
}

impl fmt::Display for AdminRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The name (and actor id in the audit log) of the bootstrap `ADMIN_API_KEY`, an owner.
pub const BOOTSTRAP: &str = "bootstrap";

/// Prefix of every generated admin key: a key without it is never looked up as one.
pub const KEY_PREFIX: &str = "sk-admin-";
/// Leading characters kept for display: the prefix and 7 hex digits.
const DISPLAY_PREFIX_LEN: usize = KEY_PREFIX.len() + 7;
/// Longest admin key name.
pub const MAX_NAME_LEN: usize = 64;

/// Whether a presented key has the shape of a generated admin key.
pub fn looks_like_admin_key(presented: &str) -> bool {
    presented.starts_with(KEY_PREFIX)
}

/// Generates an admin key: 256 random bits after `KEY_PREFIX`, hashed as team keys are.
pub fn generate() -> NewVirtualKey {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let plain = format!("{KEY_PREFIX}{}", hex::encode(bytes));
    NewVirtualKey {
        hash: keys::hash(&plain),
        display_prefix: plain[..DISPLAY_PREFIX_LEN].to_owned(),
        plain,
    }
}

/// Checks an admin key name: 1 to 64 of `A-Z a-z 0-9 _ . -`, and not `bootstrap` in any case.
/// The error says what is wrong.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return Err(format!("name must be 1 to {MAX_NAME_LEN} characters"));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
    {
        return Err(format!(
            "name may contain only letters, digits and _ . - (got '{name}')"
        ));
    }
    if name.eq_ignore_ascii_case(BOOTSTRAP) {
        return Err(format!(
            "the name '{BOOTSTRAP}' is reserved for the ADMIN_API_KEY"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_are_ordered_least_first() {
        assert!(AdminRole::Owner.allows(AdminRole::Billing));
        assert!(AdminRole::Billing.allows(AdminRole::Viewer));
        assert!(AdminRole::Viewer.allows(AdminRole::Viewer));
        assert!(!AdminRole::Viewer.allows(AdminRole::Billing));
        assert!(!AdminRole::Billing.allows(AdminRole::Owner));
        for role in AdminRole::ALL {
            let json = serde_json::to_string(&role).expect("serializes");
            assert_eq!(json, format!("\"{role}\""));
        }
    }

    #[test]
    fn generated_keys_have_the_admin_prefix_and_a_telling_display_prefix() {
        let key = generate();
        assert!(looks_like_admin_key(&key.plain));
        assert_eq!(key.plain.len(), KEY_PREFIX.len() + 64);
        assert_eq!(key.hash, keys::hash(&key.plain));
        assert_eq!(key.display_prefix.len(), KEY_PREFIX.len() + 7);
        assert!(key.plain.starts_with(&key.display_prefix));
        // A team key can never be taken for one.
        assert!(!looks_like_admin_key(&keys::generate().plain));
    }

    #[test]
    fn names_are_short_plain_and_not_bootstrap() {
        for good in ["alice", "ci.deploy-bot_2", &"a".repeat(64)] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "has space",
            "slash/",
            "ü",
            "a:b",
            &"a".repeat(65),
            "bootstrap",
            "BootStrap",
        ] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }
}
