//! A name resolver for the mirror connections that asks once per host and retries fast.
//!
//! ureq resolves the host name before every request, even on a pooled connection, so a build
//! that downloads a hundred `.deb`s asks the system resolver a hundred times. Where a DNS
//! reply is sometimes lost, each loss costs glibc's five-second retry, and one lost reply
//! stalls the whole download phase. This resolver keeps answers for a few minutes in a
//! [`DnsCache`] owned by the build's session (shared by every agent of that session, dropped
//! with it), lets one thread ask while the others wait for its answer, and asks again after a
//! short wait instead of sitting out the system's timeout.

use std::collections::HashMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ureq::config::Config;
use ureq::http::Uri;
use ureq::unversioned::resolver::{ResolvedSocketAddrs, Resolver};
use ureq::unversioned::transport::NextTimeout;

/// How long an answer is reused.
const TTL: Duration = Duration::from_secs(300);
/// How long one attempt may take before another is started beside it.
const ATTEMPT: Duration = Duration::from_millis(1500);
/// Attempts started in all; the last one is given the full system timeout.
const ATTEMPTS: u32 = 4;
/// What the last attempt may take.
const LAST_WAIT: Duration = Duration::from_secs(10);

type Answer = Result<Vec<SocketAddr>, String>;

/// One host's entry: the answer once known, and when it was got.
type Slot = Option<(Instant, Vec<SocketAddr>)>;

/// Answers by `host:port`. Each host has its own mutex, held while it is looked up, so
/// concurrent requests for one host wait for a single lookup.
#[derive(Debug, Default)]
pub(crate) struct DnsCache {
    hosts: Mutex<HashMap<String, Arc<Mutex<Slot>>>>,
}

/// The caching resolver handed to ureq.
#[derive(Debug, Default)]
pub(crate) struct CachingResolver(pub(crate) Arc<DnsCache>);

impl Resolver for CachingResolver {
    fn resolve(
        &self,
        uri: &Uri,
        config: &Config,
        _timeout: NextTimeout,
    ) -> Result<ResolvedSocketAddrs, ureq::Error> {
        let host = uri.host().ok_or(ureq::Error::HostNotFound)?;
        let port = uri
            .port_u16()
            .or_else(|| match uri.scheme_str() {
                Some("https") => Some(443),
                Some("http") => Some(80),
                _ => None,
            })
            .ok_or(ureq::Error::HostNotFound)?;
        // A bracketed IPv6 literal is given to the lookup without brackets.
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let addrs = self.0.lookup(host, port)?;
        let mut out = self.empty();
        for a in config.ip_family().keep_wanted(addrs.into_iter()).take(16) {
            out.push(a);
        }
        if out.is_empty() {
            return Err(ureq::Error::HostNotFound);
        }
        Ok(out)
    }
}

impl DnsCache {
    /// The addresses of `host:port`, from the cache or from the system resolver.
    pub(crate) fn lookup(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, ureq::Error> {
        let key = format!("{host}:{port}");
        let slot = {
            let mut map = self.hosts.lock().unwrap_or_else(|e| e.into_inner());
            map.entry(key.clone()).or_default().clone()
        };
        let mut slot = slot.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((at, addrs)) = &*slot
            && at.elapsed() < TTL
        {
            return Ok(addrs.clone());
        }
        let addrs = ask(&key).map_err(|e| {
            ureq::Error::Io(std::io::Error::other(format!("resolving {host}: {e}")))
        })?;
        *slot = Some((Instant::now(), addrs.clone()));
        Ok(addrs)
    }
}

/// Asks the system resolver, starting another attempt beside a slow one; the first reply
/// wins (a later attempt may well be answered before an earlier, lost one times out).
fn ask(host_port: &str) -> Answer {
    let (tx, rx) = mpsc::channel::<Answer>();
    let mut last_err = String::from("no answer");
    for attempt in 1..=ATTEMPTS {
        let tx = tx.clone();
        let name = host_port.to_owned();
        std::thread::spawn(move || {
            let r = name
                .to_socket_addrs()
                .map(|it| it.collect::<Vec<_>>())
                .map_err(|e| e.to_string());
            let _ = tx.send(r);
        });
        let wait = if attempt == ATTEMPTS {
            LAST_WAIT
        } else {
            ATTEMPT
        };
        // The first reply wins, a failure too: "no such host" is an answer, a lost reply is not.
        match rx.recv_timeout(wait) {
            Ok(Ok(addrs)) if addrs.is_empty() => return Err("no addresses".into()),
            Ok(r) => return r,
            Err(_) => last_err = format!("no reply in {} attempts", attempt),
        }
    }
    Err(last_err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_resolves_and_is_cached() {
        let dns = DnsCache::default();
        let lookup = |h: &str, p: u16| dns.lookup(h, p);
        let a = lookup("localhost", 8080).expect("localhost resolves");
        assert!(
            a.iter().all(|s| s.port() == 8080 && s.ip().is_loopback()),
            "{a:?}"
        );
        let b = lookup("localhost", 8080).expect("again");
        assert_eq!(a, b);
        let lit = lookup("127.0.0.1", 1).expect("an address literal");
        assert_eq!(
            lit,
            vec!["127.0.0.1:1".parse::<SocketAddr>().expect("addr")]
        );
    }

    #[test]
    fn an_unknown_host_fails_with_its_name() {
        let e = DnsCache::default()
            .lookup("no-such-host.invalid", 80)
            .expect_err("must not resolve");
        assert!(e.to_string().contains("no-such-host.invalid"), "{e}");
    }
}
