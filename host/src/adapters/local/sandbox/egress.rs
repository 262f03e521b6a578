//! A project's way out of its network namespace: an HTTP proxy (CONNECT and plain HTTP)
//! listening inside the namespace, which connects from the host only to destinations on the
//! project's allow-list, and a forward per allow-listed loopback destination (the tests' fake
//! model APIs, a local model server), so clients that ignore proxy variables still reach it.
//! Refusals are broadcast as notices for the project's running commands.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

use super::netns::Netns;
pub use crate::domain::network::{AllowRule, RuleError, allowed};

/// The egress side of one project's namespace.
pub struct Egress {
    rules: Arc<Mutex<Vec<AllowRule>>>,
    notices: broadcast::Sender<String>,
    proxy: JoinHandle<()>,
    forwards: Mutex<Vec<JoinHandle<()>>>,
}

impl Drop for Egress {
    fn drop(&mut self) {
        self.proxy.abort();
        if let Ok(forwards) = self.forwards.lock() {
            forwards.iter().for_each(JoinHandle::abort);
        }
    }
}

impl Egress {
    /// Starts the proxy on `127.0.0.1:proxy_port` inside `netns` and the forwards for `rules`.
    pub async fn start(
        netns: &Netns,
        project: String,
        proxy_port: u16,
        rules: Vec<AllowRule>,
    ) -> std::io::Result<Self> {
        let listener = netns.listen(proxy_port).await?;
        let (notices, _) = broadcast::channel(64);
        let rules = Arc::new(Mutex::new(rules));
        let proxy = tokio::spawn(serve_proxy(
            listener,
            project,
            rules.clone(),
            notices.clone(),
        ));
        let egress = Self {
            rules,
            notices,
            proxy,
            forwards: Mutex::new(Vec::new()),
        };
        egress.start_forwards(netns).await?;
        Ok(egress)
    }

    /// Replaces the allow-list; forwards follow the new loopback rules.
    pub async fn set_rules(&self, netns: &Netns, rules: Vec<AllowRule>) -> std::io::Result<()> {
        if let Ok(mut current) = self.rules.lock() {
            *current = rules;
        }
        if let Ok(mut forwards) = self.forwards.lock() {
            forwards.drain(..).for_each(|f| f.abort());
        }
        self.start_forwards(netns).await
    }

    /// The current allow-list.
    pub fn rules(&self) -> Vec<AllowRule> {
        self.rules.lock().map(|r| r.clone()).unwrap_or_default()
    }

    /// Refusals from now on, as human-readable warnings.
    pub fn subscribe(&self) -> broadcast::Receiver<String> {
        self.notices.subscribe()
    }

    async fn start_forwards(&self, netns: &Netns) -> std::io::Result<()> {
        let ports: Vec<u16> = self
            .rules()
            .iter()
            .filter_map(AllowRule::loopback_port)
            .collect();
        for port in ports {
            let listener = netns.listen(port).await?;
            let task = tokio::spawn(async move {
                while let Ok((inside, _)) = listener.accept().await {
                    tokio::spawn(async move {
                        if let Ok(outside) = TcpStream::connect(("127.0.0.1", port)).await {
                            splice(inside, outside, &[]).await;
                        }
                    });
                }
            });
            if let Ok(mut forwards) = self.forwards.lock() {
                forwards.push(task);
            }
        }
        Ok(())
    }
}

async fn serve_proxy(
    listener: tokio::net::TcpListener,
    project: String,
    rules: Arc<Mutex<Vec<AllowRule>>>,
    notices: broadcast::Sender<String>,
) {
    while let Ok((client, _)) = listener.accept().await {
        let project = project.clone();
        let rules = rules.clone();
        let notices = notices.clone();
        tokio::spawn(async move {
            let _ = handle(client, &project, &rules, &notices).await;
        });
    }
}

/// Longest request head the proxy reads.
const MAX_HEAD: usize = 16 * 1024;

async fn handle(
    mut client: TcpStream,
    project: &str,
    rules: &Mutex<Vec<AllowRule>>,
    notices: &broadcast::Sender<String>,
) -> std::io::Result<()> {
    let (head, rest) =
        match tokio::time::timeout(Duration::from_secs(30), read_head(&mut client)).await {
            Ok(Ok(parts)) => parts,
            _ => return respond(&mut client, "400 Bad Request", "unreadable request").await,
        };
    let Some(target) = Target::parse(&head) else {
        return respond(&mut client, "400 Bad Request", "not a proxy request").await;
    };
    let permitted = rules
        .lock()
        .map(|r| allowed(&r, &target.host, target.port))
        .unwrap_or(false);
    if !permitted {
        let message = format!(
            "egress refused: {}:{} is not on project {project}'s allow-list",
            target.host, target.port
        );
        tracing::warn!(project, host = %target.host, port = target.port, "egress refused");
        let _ = notices.send(message.clone());
        return respond(&mut client, "403 Forbidden", &message).await;
    }
    let connected = tokio::time::timeout(
        Duration::from_secs(10),
        TcpStream::connect((target.host.as_str(), target.port)),
    )
    .await;
    let Ok(Ok(upstream)) = connected else {
        let message = format!("cannot reach {}:{}", target.host, target.port);
        return respond(&mut client, "502 Bad Gateway", &message).await;
    };
    if target.tunnel {
        client
            .write_all(b"HTTP/1.1 200 Connection Established\r\n\r\n")
            .await?;
        splice(client, upstream, &rest).await;
    } else {
        let mut first = target.origin_head.into_bytes();
        first.extend_from_slice(&rest);
        splice(client, upstream, &first).await;
    }
    Ok(())
}

async fn respond(client: &mut TcpStream, status: &str, message: &str) -> std::io::Result<()> {
    let body = format!("{message}\n");
    let head = format!(
        "HTTP/1.1 {status}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    client.write_all(head.as_bytes()).await?;
    client.write_all(body.as_bytes()).await?;
    client.shutdown().await
}

/// Copies both ways until either side closes; `first` goes upstream before anything else.
async fn splice(mut client: TcpStream, mut upstream: TcpStream, first: &[u8]) {
    if !first.is_empty() && upstream.write_all(first).await.is_err() {
        return;
    }
    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
}

/// Reads up to the blank line ending the head; returns the head and any bytes after it.
async fn read_head(client: &mut TcpStream) -> std::io::Result<(String, Vec<u8>)> {
    let mut buffer = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    loop {
        if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            let rest = buffer.split_off(end + 4);
            let head = String::from_utf8(buffer)
                .map_err(|_| std::io::Error::other("the request head is not UTF-8"))?;
            return Ok((head, rest));
        }
        if buffer.len() > MAX_HEAD {
            return Err(std::io::Error::other("request head too long"));
        }
        let n = client.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::Error::other(
                "closed before the request head ended",
            ));
        }
        buffer.extend_from_slice(&chunk[..n]);
    }
}

/// Where a proxy request goes.
#[derive(Debug, PartialEq, Eq)]
struct Target {
    host: String,
    port: u16,
    /// CONNECT: a tunnel; else a plain HTTP request to forward.
    tunnel: bool,
    /// For plain HTTP: the head rewritten to origin form, proxy headers dropped.
    origin_head: String,
}

impl Target {
    fn parse(head: &str) -> Option<Self> {
        let mut lines = head.split("\r\n");
        let mut request = lines.next()?.split(' ');
        let (method, target, version) = (request.next()?, request.next()?, request.next()?);
        if method.eq_ignore_ascii_case("CONNECT") {
            let (host, port) = split_host_port(target, 443)?;
            return Some(Self {
                host,
                port,
                tunnel: true,
                origin_head: String::new(),
            });
        }
        let rest = target.strip_prefix("http://")?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let (host, port) = split_host_port(authority, 80)?;
        let mut origin_head = format!("{method} {path} {version}\r\n");
        for line in lines.filter(|l| !l.is_empty()) {
            let name = line
                .split(':')
                .next()
                .unwrap_or_default()
                .to_ascii_lowercase();
            if !name.starts_with("proxy-") {
                origin_head.push_str(line);
                origin_head.push_str("\r\n");
            }
        }
        origin_head.push_str("\r\n");
        Some(Self {
            host,
            port,
            tunnel: false,
            origin_head,
        })
    }
}

fn split_host_port(authority: &str, default: u16) -> Option<(String, u16)> {
    if authority.contains('@') || authority.is_empty() {
        return None;
    }
    if let Some(v6) = authority.strip_prefix('[') {
        let (host, after) = v6.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().ok()?,
            None => default,
        };
        return Some((host.to_owned(), port));
    }
    match authority.rsplit_once(':') {
        Some((host, port)) => Some((host.to_owned(), port.parse().ok()?)),
        None => Some((authority.to_owned(), default)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_requests_are_parsed_into_targets() {
        let connect = Target::parse("CONNECT api.x.com:443 HTTP/1.1\r\nHost: api.x.com\r\n")
            .expect("connect");
        assert_eq!(
            (connect.host.as_str(), connect.port, connect.tunnel),
            ("api.x.com", 443, true)
        );
        let plain = Target::parse(
            "GET http://h.example:8080/v1/x?q=1 HTTP/1.1\r\nHost: h.example:8080\r\nProxy-Connection: keep-alive\r\n",
        )
        .expect("plain");
        assert_eq!((plain.host.as_str(), plain.port), ("h.example", 8080));
        assert_eq!(
            plain.origin_head,
            "GET /v1/x?q=1 HTTP/1.1\r\nHost: h.example:8080\r\n\r\n"
        );
        assert!(Target::parse("GET /relative HTTP/1.1\r\n").is_none());
        assert!(Target::parse("CONNECT user@h:443 HTTP/1.1\r\n").is_none());
    }
}
