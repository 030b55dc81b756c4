//! The HTTP client webhooks are sent with, and what its failures are called. The callback URL is
//! the tenant's, so the client connects only where the target policy permits: every address a
//! host name resolves to is checked at connect time (a name checked when the job was created
//! may resolve elsewhere by now), redirects are not followed, and no proxy is used (a proxy would
//! resolve and connect on our behalf, out of the policy's sight). What an attempt records is
//! shown to the tenant, so failures are named in generic words, never with the OS error or the
//! address that was tried.

use std::error::Error as StdError;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use saasllm_shared::domain::net_policy::TargetPolicy;

/// The `user-agent` of every delivery.
pub const USER_AGENT: &str = "saasllm-webhooks";

/// The recorded error of an attempt refused by the target policy.
pub const TARGET_NOT_ALLOWED: &str = "target address not allowed";
/// The recorded error of an attempt that could not connect (refused, unreachable, TLS).
pub const CONNECTION_FAILED: &str = "connection failed";
/// The recorded error of an attempt that got no answer in time.
pub const TIMED_OUT: &str = "timed out";
/// The recorded error of any other transport failure.
pub const REQUEST_FAILED: &str = "request failed";

/// A host name resolved only to addresses the policy refuses.
#[derive(Debug, thiserror::Error)]
#[error("{TARGET_NOT_ALLOWED}")]
pub struct TargetNotAllowed;

/// Resolves with the system resolver and keeps only the permitted addresses.
struct PolicyResolver {
    policy: TargetPolicy,
}

impl Resolve for PolicyResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.policy;
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let permitted = resolve_permitted(&host, policy).await?;
            Ok(Box::new(permitted.into_iter()) as Addrs)
        })
    }
}

/// The addresses `host` resolves to that `policy` permits (port 0: the client sets the URL's);
/// `TargetNotAllowed` when it resolves only to refused ones.
pub async fn resolve_permitted(
    host: &str,
    policy: TargetPolicy,
) -> Result<Vec<SocketAddr>, Box<dyn StdError + Send + Sync>> {
    let resolved: Vec<SocketAddr> = tokio::net::lookup_host((host, 0)).await?.collect();
    let permitted: Vec<SocketAddr> = resolved
        .iter()
        .copied()
        .filter(|addr| policy.permits(addr.ip()))
        .collect();
    if permitted.is_empty() && !resolved.is_empty() {
        return Err(Box::new(TargetNotAllowed));
    }
    Ok(permitted)
}

/// The webhook client: bounded by `timeout`, connecting only where `policy` permits.
pub fn client(timeout: Duration, policy: TargetPolicy) -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(5)))
        // A redirect is an answer like any non-2xx: the event goes only where the job said, and a
        // redirect to an internal address cannot bypass the policy.
        .redirect(reqwest::redirect::Policy::none())
        // Ignores HTTP_PROXY and friends: a proxy would connect to the target itself.
        .no_proxy()
        .dns_resolver(Arc::new(PolicyResolver { policy }))
        .user_agent(USER_AGENT)
        .build()
}

/// A transport failure in generic words, and whether it is final (refused by the policy).
pub fn describe(error: &reqwest::Error) -> (&'static str, bool) {
    let mut cause: Option<&(dyn StdError + 'static)> = Some(error);
    while let Some(current) = cause {
        if current.is::<TargetNotAllowed>() {
            return (TARGET_NOT_ALLOWED, true);
        }
        cause = current.source();
    }
    if error.is_timeout() {
        (TIMED_OUT, false)
    } else if error.is_connect() {
        (CONNECTION_FAILED, false)
    } else {
        (REQUEST_FAILED, false)
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use tokio::net::TcpListener;

    use super::*;

    const STRICT: TargetPolicy = TargetPolicy::PUBLIC_ONLY;
    const PERMISSIVE: TargetPolicy = TargetPolicy::ALLOW_PRIVATE;

    async fn post(policy: TargetPolicy, url: &str) -> reqwest::Result<reqwest::Response> {
        client(Duration::from_secs(5), policy)
            .expect("client")
            .post(url)
            .body("{}")
            .send()
            .await
    }

    /// Whether anything connected to `listener` within a short while.
    async fn was_connected_to(listener: &TcpListener) -> bool {
        tokio::time::timeout(Duration::from_millis(300), listener.accept())
            .await
            .is_ok()
    }

    #[tokio::test]
    async fn localhost_resolves_to_nothing_permitted_unless_private_targets_are_allowed() {
        let refused = resolve_permitted("localhost", STRICT).await;
        assert!(
            refused.is_err_and(|e| e.is::<TargetNotAllowed>()),
            "localhost must be refused"
        );
        let permitted = resolve_permitted("localhost", PERMISSIVE)
            .await
            .expect("localhost resolves");
        assert!(
            permitted.iter().any(|a| a.ip().is_loopback()),
            "{permitted:?}"
        );
    }

    #[tokio::test]
    async fn a_name_resolving_to_loopback_is_refused_at_connect_time_and_nothing_is_sent() {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();

        let error = post(STRICT, &format!("http://localhost:{port}/hook"))
            .await
            .expect_err("a loopback target must be refused");

        assert_eq!(describe(&error), (TARGET_NOT_ALLOWED, true));
        assert!(!was_connected_to(&listener).await, "a connection was made");
    }

    #[tokio::test]
    async fn the_same_name_is_reached_when_private_targets_are_allowed() {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let url = format!("http://localhost:{port}/hook");
        let sending = tokio::spawn(async move { post(PERMISSIVE, &url).await });
        assert!(was_connected_to(&listener).await, "no connection was made");
        sending.abort();
    }

    #[tokio::test]
    async fn a_refused_connection_is_described_without_os_details() {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        drop(listener);

        let error = post(PERMISSIVE, &format!("http://{addr}/hook"))
            .await
            .expect_err("nothing listens");

        assert_eq!(describe(&error), (CONNECTION_FAILED, false));
    }
}
