//! #21 part 2, through a real `rdev serve` and raw TCP sockets: idle or slow unauthenticated
//! sockets cannot take the listener. Connections beyond the per-peer and total caps get a
//! `503` and are closed while `/healthz` and submits from another address still answer; a
//! slowloris client is cut at the header-read timeout, a stalled request body and an idle
//! socket at the idle timeout; an SSE stream stays open past the idle timeout.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use rdev::server::ServeConfig;
use rdev_tests::harness::server::TestServer;

fn addr(server: &TestServer) -> SocketAddr {
    server.server().local_addr()
}

/// A TCP connection to the server from `source` (any 127.0.0.0/8 address is this host).
async fn connect_from(server: &TestServer, source: Ipv4Addr) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    socket
        .bind(SocketAddr::new(IpAddr::V4(source), 0))
        .expect("bind a loopback source");
    socket.connect(addr(server)).await.expect("connect")
}

/// Everything the server sends until it closes the connection, or what came within `wait`;
/// whether it closed.
async fn read_until_closed(stream: &mut TcpStream, wait: Duration) -> (String, bool) {
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return (String::from_utf8_lossy(&received).into_owned(), false),
            Ok(Ok(0) | Err(_)) => return (String::from_utf8_lossy(&received).into_owned(), true),
            Ok(Ok(n)) => received.extend_from_slice(&buf[..n]),
        }
    }
}

/// An HTTP client whose connections come from `source`.
fn client_from(source: Ipv4Addr) -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .local_address(IpAddr::V4(source))
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client")
}

const ATTACKER: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 1);
const OTHER: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sockets_beyond_the_per_peer_cap_get_503_and_others_are_still_served() {
    let server = TestServer::sqlite_with(|config: &mut ServeConfig| {
        config.connections.max_connections = 1000;
        config.connections.max_connections_per_peer = 20;
        config.connections.header_read_timeout = Duration::from_secs(60);
        config.connections.idle_timeout = Duration::from_secs(60);
    })
    .await;
    let mut held = Vec::new();
    for _ in 0..20 {
        held.push(connect_from(&server, ATTACKER).await);
    }
    // Every socket beyond the cap is answered 503 and closed at once.
    for _ in 0..40 {
        let mut excess = connect_from(&server, ATTACKER).await;
        let (answer, closed) = read_until_closed(&mut excess, Duration::from_secs(5)).await;
        assert!(answer.starts_with("HTTP/1.1 503 "), "{answer:?}");
        assert!(closed, "the refused socket is closed: {answer:?}");
    }
    // The held sockets are still open (the server sent nothing on them).
    for stream in &mut held {
        let (sent, closed) = read_until_closed(stream, Duration::from_millis(10)).await;
        assert!(!closed && sent.is_empty(), "{sent:?}");
    }

    // Another address is served: probes and submits.
    let other = client_from(OTHER);
    let started = Instant::now();
    let health = other
        .get(server.url("/healthz"))
        .send()
        .await
        .expect("healthz from another address");
    assert_eq!(health.status(), StatusCode::OK);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    let submitted = other
        .post(server.url("/projects/conn/shell"))
        .bearer_auth(&server.admin)
        .json(&serde_json::json!({ "prompt": "echo ok" }))
        .send()
        .await
        .expect("submit from another address");
    assert_eq!(submitted.status(), StatusCode::ACCEPTED);

    // Closing the held sockets frees their places.
    drop(held);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let answer = client_from(ATTACKER)
            .get(server.url("/healthz"))
            .send()
            .await;
        if answer.is_ok_and(|r| r.status() == StatusCode::OK) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the attacker's places were never freed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_total_cap_get_503() {
    let server = TestServer::sqlite_with(|config: &mut ServeConfig| {
        config.connections.max_connections = 8;
        config.connections.max_connections_per_peer = 100;
        config.connections.header_read_timeout = Duration::from_secs(60);
    })
    .await;
    let mut held = Vec::new();
    for _ in 0..8 {
        held.push(connect_from(&server, ATTACKER).await);
    }
    let answer = client_from(OTHER)
        .get(server.url("/healthz"))
        .send()
        .await
        .expect("an answer, not a timeout");
    assert_eq!(answer.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(answer.headers()["retry-after"], "1");
    drop(held);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slowloris_is_cut_at_the_header_read_timeout() {
    let server = TestServer::sqlite_with(|config: &mut ServeConfig| {
        config.connections.header_read_timeout = Duration::from_secs(1);
        config.connections.idle_timeout = Duration::from_secs(60);
    })
    .await;
    let mut stream = connect_from(&server, ATTACKER).await;
    let started = Instant::now();
    let head = b"GET /healthz HTTP/1.1\r\nHost: rdev\r\nX-Padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    // One byte every 100 ms: the whole head would take 9 s; each byte is progress, so only
    // the header timeout can end it.
    let mut cut = None;
    for byte in head.iter().take(head.len() - 2) {
        if stream.write_all(&[*byte]).await.is_err() {
            cut = Some(started.elapsed());
            break;
        }
        let (_, closed) = read_until_closed(&mut stream, Duration::from_millis(100)).await;
        if closed {
            cut = Some(started.elapsed());
            break;
        }
    }
    let cut = cut.expect("the server never cut the slow header");
    assert!(
        cut >= Duration::from_millis(900) && cut < Duration::from_secs(4),
        "cut after {cut:?}"
    );
    // A prompt client on a fresh connection is unaffected.
    server.anonymous().get("/healthz", StatusCode::OK).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sockets_and_stalled_bodies_are_cut_but_sse_streams_stay_open() {
    let server = TestServer::sqlite_with(|config: &mut ServeConfig| {
        config.connections.header_read_timeout = Duration::from_secs(30);
        config.connections.idle_timeout = Duration::from_secs(1);
        // No keep-alive comment within the test: only the exemption keeps the stream open.
        config.sse.keep_alive = Duration::from_secs(60);
    })
    .await;

    // A socket that sends nothing is closed after the idle timeout (the header timeout is 30 s).
    let mut idle = connect_from(&server, ATTACKER).await;
    let started = Instant::now();
    let (_, closed) = read_until_closed(&mut idle, Duration::from_secs(10)).await;
    assert!(closed, "an idle socket stays open");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(4),
        "{waited:?}"
    );

    // A request whose body stops arriving is cut too.
    let mut stalled = connect_from(&server, ATTACKER).await;
    let head = format!(
        "POST /projects/conn/shell HTTP/1.1\r\nHost: rdev\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"prompt\"",
        server.admin
    );
    stalled.write_all(head.as_bytes()).await.expect("head sent");
    let started = Instant::now();
    let (_, closed) = read_until_closed(&mut stalled, Duration::from_secs(10)).await;
    assert!(closed, "a stalled body holds the connection");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );

    // A stream whose command is silent for three idle timeouts is not cut.
    let submitted = server
        .submit("conn", "shell", "sleep 3; echo after-the-silence")
        .await;
    let (events, _) = server.follow(&submitted).await;
    let text: String = events.iter().map(|e| e.data.clone()).collect();
    assert!(text.contains("after-the-silence"), "{events:?}");
    let done = events.last().expect("events").json();
    assert_eq!(done["status"], "completed", "{done}");
}
