//! Which webhook targets the service may connect to. A tenant names the callback URL, and the
//! service connects from inside the deployment, so without a rule a callback could reach the
//! loopback interface, the private network or a cloud metadata endpoint, and the delivery log
//! would report what answered there. The rule: only globally routable unicast addresses, unless
//! the deployment allows private targets (development, tests).
//!
//! The API applies `check_url` when a job is created (host names are not resolved then: DNS
//! answers change, and resolving would slow every create); the worker applies it again before
//! each attempt and checks every address a host name resolves to at connect time.

mod addresses;

use std::net::IpAddr;

use url::{Host, Url};

pub use addresses::is_global_unicast;
use addresses::is_never_unicast;

/// The webhook target rule of a deployment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TargetPolicy {
    /// Also permit loopback, private, link-local and other non-global unicast addresses, and
    /// internal host names. Never multicast, broadcast or unspecified addresses: no receiver
    /// can listen there.
    pub allow_private: bool,
}

impl TargetPolicy {
    /// Public addresses only (the default).
    pub const PUBLIC_ONLY: TargetPolicy = TargetPolicy {
        allow_private: false,
    };
    /// Private targets too (`WEBHOOK_ALLOW_PRIVATE_TARGETS`, development and tests).
    pub const ALLOW_PRIVATE: TargetPolicy = TargetPolicy {
        allow_private: true,
    };
}

/// Why a URL is not a permitted webhook target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("must be an http or https URL")]
    Scheme,
    #[error("must not contain a user name or password")]
    Credentials,
    #[error("must have a host")]
    NoHost,
    #[error("must have a host name of at most 253 characters in labels of 1 to 63")]
    Name,
    #[error("must not use port 0")]
    Port,
    #[error("must not point at a loopback, private, link-local or otherwise non-public address")]
    Address,
    #[error(
        "must not name a local or internal host (localhost, a name without a dot, .local, .internal, .home.arpa)"
    )]
    InternalName,
}

impl TargetPolicy {
    /// Whether the service may connect to `ip`.
    pub fn permits(self, ip: IpAddr) -> bool {
        if is_global_unicast(ip) {
            return true;
        }
        self.allow_private && !is_never_unicast(ip)
    }

    /// Checks a callback URL as far as possible without DNS: scheme, no userinfo, and the host,
    /// which is an address the policy permits or a name that is not obviously internal. The
    /// `url` crate has already normalised every IPv4 spelling (`127.1`, `0x7f000001`,
    /// `2130706433`, `0177.0.0.1`) to the address an HTTP client connects to.
    pub fn check_url(self, url: &Url) -> Result<(), Refusal> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(Refusal::Scheme);
        }
        // Credentials in a URL would be shown wherever the job is, and `https://trusted@evil`
        // is a classic way to make a target look like another one.
        if !url.username().is_empty() || url.password().is_some() {
            return Err(Refusal::Credentials);
        }
        // No connection can reach port 0: a target there is a mistake caught now, not after a
        // day of retries.
        if url.port() == Some(0) {
            return Err(Refusal::Port);
        }
        match url.host() {
            None => Err(Refusal::NoHost),
            Some(Host::Domain(name)) if !is_valid_dns_name(name) => Err(Refusal::Name),
            Some(Host::Domain("")) => Err(Refusal::NoHost),
            Some(Host::Ipv4(ip)) => self.check_ip(IpAddr::V4(ip)),
            Some(Host::Ipv6(ip)) => self.check_ip(IpAddr::V6(ip)),
            Some(Host::Domain(name)) => {
                if !self.allow_private && is_internal_name(name) {
                    Err(Refusal::InternalName)
                } else {
                    Ok(())
                }
            }
        }
    }

    fn check_ip(self, ip: IpAddr) -> Result<(), Refusal> {
        if self.permits(ip) {
            Ok(())
        } else {
            Err(Refusal::Address)
        }
    }
}

/// A name DNS can hold: at most 253 characters (without a trailing dot), labels of 1 to 63.
fn is_valid_dns_name(name: &str) -> bool {
    let name = name.strip_suffix('.').unwrap_or(name);
    name.len() <= 253 && name.split('.').all(|label| (1..=63).contains(&label.len()))
}

/// Names that resolve to this host or to the local network: `localhost` and its subdomains
/// (RFC 6761), mDNS `.local`, the private-use `.internal` and `.home.arpa` (RFC 8375), and a
/// single label, which resolvers complete with the local search domain (`metadata`, `redis`).
/// The trailing dot of a fully qualified name is ignored.
pub fn is_internal_name(name: &str) -> bool {
    let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
    if !name.contains('.') {
        return true;
    }
    ["localhost", "local", "internal", "home.arpa"]
        .iter()
        .any(|suffix| name == *suffix || name.ends_with(&format!(".{suffix}")))
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    const STRICT: TargetPolicy = TargetPolicy::PUBLIC_ONLY;
    const PERMISSIVE: TargetPolicy = TargetPolicy::ALLOW_PRIVATE;

    fn url(text: &str) -> Url {
        Url::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    /// Every spelling of a forbidden address, as a callback URL would carry it.
    const FORBIDDEN_URLS: &[&str] = &[
        "http://127.0.0.1/hook",
        "http://127.1/hook",
        "http://127.0.0.1./hook",
        "http://0x7f000001/hook",
        "http://2130706433/hook",
        "http://0177.0.0.1/hook",
        "http://0x7f.0.0.1/hook",
        "http://127.0.0.1:6379/",
        "http://127.255.255.254/",
        "http://[::ffff:127.0.0.1]/hook",
        "http://[::ffff:7f00:1]/hook",
        "http://[::127.0.0.1]/hook",
        "http://[64:ff9b::127.0.0.1]/hook",
        "http://[64:ff9b::a9fe:a9fe]/hook",
        "http://[64:ff9b:1::1]/hook",
        "http://[::1]/hook",
        "http://[::]/hook",
        "http://0.0.0.0/hook",
        "http://0/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::ffff:169.254.169.254]/",
        "http://10.0.0.1/",
        "http://10.255.255.255/",
        "http://172.16.0.1/",
        "http://172.31.255.255/",
        "http://192.168.1.1/",
        "http://100.64.0.1/",
        "http://100.127.255.255/",
        "http://192.0.0.8/",
        "http://192.0.2.10/",
        "http://198.51.100.7/",
        "http://203.0.113.9/",
        "http://198.18.0.1/",
        "http://198.19.255.255/",
        "http://192.88.99.1/",
        "http://224.0.0.1/",
        "http://239.255.255.250/",
        "http://240.0.0.1/",
        "http://255.255.255.255/",
        "http://[fd00::1]/",
        "http://[fc00::1]/",
        "http://[fdff:ffff::1]/",
        "http://[fe80::1]/",
        "http://[febf::1]/",
        "http://[fec0::1]/",
        "http://[ff02::1]/",
        "http://[100::1]/",
        "http://[2001:db8::1]/",
        "http://[2001::1]/",
        "http://[2002:7f00:1::1]/",
        "http://[3fff::1]/",
        "https://localhost/hook",
        "http://LOCALHOST:8080/hook",
        "http://localhost./hook",
        "http://api.localhost/hook",
        "http://printer.local/",
        "http://metadata.google.internal/computeMetadata/v1/",
        "http://router.home.arpa/",
        "http://metadata/",
        "http://redis:6379/",
    ];

    #[test]
    fn the_url_parser_normalises_every_ipv4_spelling_to_the_address_connected_to() {
        for spelling in [
            "127.0.0.1",
            "127.1",
            "0x7f000001",
            "2130706433",
            "0177.0.0.1",
            "0x7f.1",
            "%31%32%37.0.0.1",
        ] {
            let parsed = url(&format!("http://{spelling}/hook"));
            assert_eq!(
                parsed.host(),
                Some(Host::Ipv4(Ipv4Addr::LOCALHOST)),
                "{spelling}"
            );
        }
        assert_eq!(
            url("http://[::ffff:127.0.0.1]/").host(),
            Some(Host::Ipv6("::ffff:7f00:1".parse().expect("v6")))
        );
    }

    #[test]
    fn every_spelling_of_a_non_public_target_is_refused_by_default() {
        for text in FORBIDDEN_URLS {
            let refusal = STRICT.check_url(&url(text));
            assert!(
                matches!(refusal, Err(Refusal::Address | Refusal::InternalName)),
                "{text}: {refusal:?}"
            );
        }
    }

    #[test]
    fn port_zero_and_names_dns_cannot_hold_are_refused() {
        let long_label = format!("https://{}.com/hook", "a".repeat(64));
        let long_name = format!("https://{}com/hook", "abcdefghi.".repeat(26));
        assert_eq!(STRICT.check_url(&url(&long_label)), Err(Refusal::Name));
        assert_eq!(STRICT.check_url(&url(&long_name)), Err(Refusal::Name));
        assert_eq!(
            STRICT.check_url(&url("https://hooks.example.com:0/hook")),
            Err(Refusal::Port)
        );
        let longest_label = format!("https://{}.com/hook", "a".repeat(63));
        assert_eq!(STRICT.check_url(&url(&longest_label)), Ok(()));
    }

    #[test]
    fn public_urls_with_any_port_are_permitted() {
        for text in [
            "https://hooks.example.com/saasllm?team=1",
            "http://hooks.example.com:8443/saasllm",
            "https://93.184.215.14/hook",
            "https://[2606:4700:4700::1111]:9000/hook",
            "https://example.com./hook",
        ] {
            assert_eq!(STRICT.check_url(&url(text)), Ok(()), "{text}");
        }
    }

    #[test]
    fn allowing_private_targets_permits_internal_unicast_addresses_but_never_multicast() {
        for text in [
            "http://127.0.0.1:8080/hook",
            "http://[::1]:8080/hook",
            "http://localhost:8080/hook",
            "http://10.0.0.1/",
            "http://169.254.169.254/",
            "http://receiver/hook",
        ] {
            assert_eq!(PERMISSIVE.check_url(&url(text)), Ok(()), "{text}");
        }
        for text in [
            "http://0.0.0.0/",
            "http://[::]/",
            "http://224.0.0.1/",
            "http://255.255.255.255/",
            "http://[ff02::1]/",
            "http://[::ffff:0.0.0.0]/",
        ] {
            assert_eq!(
                PERMISSIVE.check_url(&url(text)),
                Err(Refusal::Address),
                "{text}"
            );
        }
    }

    #[test]
    fn credentials_and_other_schemes_are_refused_whatever_the_policy() {
        for policy in [STRICT, PERMISSIVE] {
            for text in [
                "http://user:pass@hooks.example.com/",
                "https://hooks.example.com@169.254.169.254/",
                "https://token@hooks.example.com/",
            ] {
                assert_eq!(
                    policy.check_url(&url(text)),
                    Err(Refusal::Credentials),
                    "{text}"
                );
            }
            for text in [
                "ftp://hooks.example.com/",
                "file:///etc/passwd",
                "gopher://127.0.0.1:6379/_",
            ] {
                assert_eq!(policy.check_url(&url(text)), Err(Refusal::Scheme), "{text}");
            }
        }
    }
}
