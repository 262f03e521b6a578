//! How many connections the listener holds: a total cap (file descriptors are finite: past
//! the process's limit `accept` fails and every client times out) and a per-peer cap (so one
//! address cannot take them all). A connection beyond either gets a minimal `503` written
//! straight on the socket, then the socket is closed.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

/// Timeouts and caps of the HTTP listener (`[connections]` in the configuration file).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// How long a client may take to send a request's headers. hyper starts this clock when
    /// it starts waiting for a request, so a connection that sends nothing at all (fresh or
    /// between requests) is closed after it too.
    pub header_read_timeout: Duration,
    /// How long a connection may move no bytes while the server waits on the client (between
    /// requests, or for a request body). Never applies to a response being computed or
    /// streamed: SSE streams have their own keep-alives and write timeout.
    pub idle_timeout: Duration,
    /// Connections held at once; beyond it, `503` and close.
    pub max_connections: usize,
    /// Connections held at once from one IP address; beyond it, `503` and close. Behind a
    /// reverse proxy every client shares the proxy's address: raise it there.
    pub max_connections_per_peer: usize,
}

impl Default for ConnectionLimits {
    /// 10 s for headers, 60 s idle, half the process's open-file limit in total (32 to
    /// 16384) and a quarter of that per peer (at least 8).
    fn default() -> Self {
        let max_connections = (open_file_limit() / 2).clamp(32, 16_384);
        Self {
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections,
            max_connections_per_peer: (max_connections / 4).max(8),
        }
    }
}

/// The soft `RLIMIT_NOFILE` (1024 when it cannot be read).
fn open_file_limit() -> usize {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the struct we own and reads nothing else.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    if rc != 0 {
        return 1024;
    }
    usize::try_from(limit.rlim_cur).unwrap_or(usize::MAX)
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    Total,
    Peer,
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    per_peer: HashMap<IpAddr, usize>,
}

/// Admits connections under the caps; each admitted one holds a [`Permit`].
#[derive(Debug)]
pub struct Gate {
    limits: ConnectionLimits,
    counts: Mutex<Counts>,
    /// Refused sockets being answered at once; beyond it they are closed unanswered.
    answering: Arc<Semaphore>,
}

/// Refused sockets answered with a `503` at once; further ones are just closed.
const MAX_ANSWERING: usize = 64;
/// How long a refused socket is kept to answer it and let the client read the answer.
const ANSWER_LINGER: Duration = Duration::from_secs(1);
/// How long a refused socket's request is awaited before the answer: an HTTP client takes a
/// response that comes before its request for a protocol error, not for a `503`.
const REQUEST_WAIT: Duration = Duration::from_millis(200);

impl Gate {
    pub fn new(limits: ConnectionLimits) -> Arc<Self> {
        Arc::new(Self {
            limits,
            counts: Mutex::new(Counts::default()),
            answering: Arc::new(Semaphore::new(MAX_ANSWERING)),
        })
    }

    /// A permit for one more connection from `peer`, or why not.
    pub fn admit(self: &Arc<Self>, peer: IpAddr) -> Result<Permit, Refused> {
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        if counts.total >= self.limits.max_connections {
            return Err(Refused::Total);
        }
        let from_peer = counts.per_peer.entry(peer).or_default();
        if *from_peer >= self.limits.max_connections_per_peer {
            return Err(Refused::Peer);
        }
        *from_peer += 1;
        counts.total += 1;
        Ok(Permit {
            gate: self.clone(),
            peer,
        })
    }

    /// Answers a refused socket with `503` and closes it, without holding up the accept
    /// loop: at most [`MAX_ANSWERING`] at once for at most [`ANSWER_LINGER`] each; beyond
    /// that the socket is closed unanswered.
    pub fn refuse(&self, stream: TcpStream, why: Refused) {
        let Ok(slot) = self.answering.clone().try_acquire_owned() else {
            return;
        };
        tokio::spawn(async move {
            let _slot = slot;
            let _ = tokio::time::timeout(ANSWER_LINGER, answer_503(stream, why)).await;
        });
    }
}

/// Waits briefly for the client's request, writes the `503`, ends the write side and reads
/// what the client sent until it closes, so that closing does not reset the connection
/// before the client read the answer.
async fn answer_503(mut stream: TcpStream, why: Refused) {
    let mut sink = [0u8; 1024];
    if let Ok(Ok(0)) =
        tokio::time::timeout(REQUEST_WAIT, AsyncReadExt::read(&mut stream, &mut sink)).await
    {
        return;
    }
    let reason = match why {
        Refused::Total => "too many connections\n",
        Refused::Peer => "too many connections from this address\n",
    };
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain\r\n\
         content-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n{reason}",
        reason.len()
    );
    if stream.write_all(response.as_bytes()).await.is_err() {
        return;
    }
    let _ = stream.shutdown().await;
    while matches!(AsyncReadExt::read(&mut stream, &mut sink).await, Ok(n) if n > 0) {}
}

/// One admitted connection; dropping it frees its place.
#[derive(Debug)]
pub struct Permit {
    gate: Arc<Gate>,
    peer: IpAddr,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut counts = self
            .gate
            .counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        counts.total = counts.total.saturating_sub(1);
        if let Some(from_peer) = counts.per_peer.get_mut(&self.peer) {
            *from_peer -= 1;
            if *from_peer == 0 {
                counts.per_peer.remove(&self.peer);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn caps_count_per_peer_and_in_total_and_free_on_drop() {
        let gate = Gate::new(ConnectionLimits {
            max_connections: 3,
            max_connections_per_peer: 2,
            ..ConnectionLimits::default()
        });
        let a: IpAddr = "10.0.0.1".parse().expect("ip");
        let b: IpAddr = "10.0.0.2".parse().expect("ip");
        let first = gate.admit(a).expect("first");
        let _second = gate.admit(a).expect("second");
        assert_eq!(gate.admit(a).err(), Some(Refused::Peer));
        let _third = gate.admit(b).expect("another peer");
        assert_eq!(gate.admit(b).err(), Some(Refused::Total));
        drop(first);
        assert!(gate.admit(a).is_ok(), "a dropped permit frees its place");
    }

    #[test]
    fn defaults_follow_the_open_file_limit() {
        let limits = ConnectionLimits::default();
        assert!(limits.max_connections >= 32);
        assert!(limits.max_connections <= open_file_limit().max(64));
        assert!(limits.max_connections_per_peer <= limits.max_connections);
    }
}
