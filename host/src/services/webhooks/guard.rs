//! The SSRF guard. A webhook URL comes from an API user, so rdev must not become a way to
//! reach its own network: targets are checked when a webhook is created and again when
//! it is delivered, through a DNS resolver that refuses forbidden addresses. Because the
//! HTTP client connects only to what this resolver returned, a name that re-resolves to an
//! internal address between the check and the connection (DNS rebinding) is refused too.

use std::net::SocketAddr;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use crate::domain::WebhookError;
use crate::domain::webhook::{UrlHost, check_target, check_url};

/// Checks a URL's syntax and, for a name, every address it resolves to now. A name that
/// does not resolve is accepted (the delivery-time check still applies), so a receiver
/// whose DNS is not set up yet can be subscribed.
pub async fn check_target_url(url: &str, allow_private: bool) -> Result<(), WebhookError> {
    match check_url(url)? {
        UrlHost::Ip(ip) => check_target(ip, allow_private),
        UrlHost::Name(name) => {
            let Ok(addrs) = tokio::net::lookup_host((name.as_str(), 0)).await else {
                return Ok(());
            };
            for addr in addrs {
                check_target(addr.ip(), allow_private)?;
            }
            Ok(())
        }
    }
}

/// A reqwest resolver that fails a lookup when any address is forbidden.
#[derive(Debug, Clone, Copy)]
pub struct GuardedResolver {
    pub allow_private: bool,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let allow_private = self.allow_private;
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await
                .map_err(|e| format!("resolving {host}: {e}"))?
                .collect();
            for addr in &addrs {
                check_target(addr.ip(), allow_private)?;
            }
            if addrs.is_empty() {
                return Err(format!("{host} has no addresses").into());
            }
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn names_of_internal_addresses_are_refused_unless_allowed() {
        let refused = check_target_url("http://localhost:9/hook", false).await;
        assert_eq!(
            refused.map_err(|e| e.code()),
            Err("webhook_target_forbidden")
        );
        assert!(
            check_target_url("http://localhost:9/hook", true)
                .await
                .is_ok()
        );
        for literal in [
            "http://10.0.0.1/",
            "http://127.0.0.1/",
            "http://169.254.169.254/latest/meta-data",
            "http://[::1]/",
        ] {
            assert_eq!(
                check_target_url(literal, false).await.map_err(|e| e.code()),
                Err("webhook_target_forbidden"),
                "{literal}"
            );
        }
    }

    #[tokio::test]
    async fn the_resolver_fails_for_internal_names() {
        let resolver = GuardedResolver {
            allow_private: false,
        };
        let name: Name = "localhost".parse().expect("name");
        let error = match resolver.resolve(name).await {
            Ok(_) => panic!("localhost must be refused"),
            Err(error) => error.to_string(),
        };
        assert!(error.contains("loopback"), "{error}");
        let allowed = GuardedResolver {
            allow_private: true,
        };
        let name: Name = "localhost".parse().expect("name");
        assert!(allowed.resolve(name).await.is_ok());
    }
}
