//! Serving a double's router on a thread and runtime of its own, so synchronous and async
//! tests use a double alike, and a test's own runtime never has to drive it.

use std::net::SocketAddr;

use axum::Router;
use tokio::sync::oneshot;

/// A router served on 127.0.0.1 with an ephemeral port; stops when dropped.
pub struct ThreadServer {
    addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ThreadServer {
    /// Binds, then serves `app` on `runtime` in a thread called `name`. When serving ends
    /// the runtime is shut down without waiting, which ends every task the double spawned.
    pub fn start(
        name: &str,
        app: Router,
        runtime: tokio::runtime::Runtime,
    ) -> std::io::Result<Self> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let (tx, rx) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || {
                runtime.block_on(async move {
                    let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                        return;
                    };
                    let _ = axum::serve(listener, app)
                        .with_graceful_shutdown(async {
                            let _ = rx.await;
                        })
                        .await;
                });
                runtime.shutdown_background();
            })?;
        Ok(Self {
            addr,
            shutdown: Some(tx),
            thread: Some(thread),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for ThreadServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        // Graceful shutdown waits for open (or upgraded) connections; a client killed
        // mid-stream may leave one, and it must not hang the test, so the thread is detached.
        drop(self.thread.take());
    }
}
