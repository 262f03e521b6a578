//! A network namespace per project holding only a loopback interface. A socket keeps the
//! namespace it was created in, so the host opens sockets inside one from a short-lived
//! thread that joined it (never a pooled thread, which would stay inside).

use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

/// A namespace, alive as long as this descriptor is open.
#[derive(Debug)]
pub struct Netns {
    fd: OwnedFd,
}

impl Netns {
    /// Creates a namespace with its loopback up. Needs CAP_SYS_ADMIN.
    pub fn create() -> std::io::Result<Self> {
        std::thread::spawn(|| {
            // SAFETY: unshare affects only this fresh thread, which ends right after.
            if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                return Err(std::io::Error::last_os_error());
            }
            loopback_up()?;
            let file = File::open("/proc/thread-self/ns/net")?;
            Ok(Self { fd: file.into() })
        })
        .join()
        .map_err(|_| std::io::Error::other("the namespace thread panicked"))?
    }

    /// The descriptor a child passes to `setns` before it execs.
    pub fn raw(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Runs `f` on a new thread inside the namespace, without blocking the async runtime.
    pub async fn run<T, F>(&self, f: F) -> std::io::Result<T>
    where
        T: Send + 'static,
        F: FnOnce() -> std::io::Result<T> + Send + 'static,
    {
        let fd = self.fd.try_clone()?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("rdev-netns".to_owned())
            .spawn(move || {
                // SAFETY: setns on this thread only, with a namespace descriptor we own.
                let joined = unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) };
                let result = if joined == 0 {
                    f()
                } else {
                    Err(std::io::Error::last_os_error())
                };
                let _ = tx.send(result);
            })?;
        rx.await
            .map_err(|_| std::io::Error::other("the namespace thread panicked"))?
    }

    /// A TCP listener on `127.0.0.1:port` inside the namespace, ready for tokio.
    pub async fn listen(&self, port: u16) -> std::io::Result<tokio::net::TcpListener> {
        let std_listener = self
            .run(move || {
                let listener = std::net::TcpListener::bind(("127.0.0.1", port))?;
                listener.set_nonblocking(true)?;
                Ok(listener)
            })
            .await?;
        tokio::net::TcpListener::from_std(std_listener)
    }

    /// A TCP connection to `127.0.0.1:port` inside the namespace.
    pub async fn connect(&self, port: u16) -> std::io::Result<tokio::net::TcpStream> {
        let stream = self
            .run(move || {
                let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
                let stream =
                    std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(5))?;
                stream.set_nonblocking(true)?;
                Ok(stream)
            })
            .await?;
        tokio::net::TcpStream::from_std(stream)
    }
}

/// Joins the namespace; for the child between fork and exec.
pub fn enter(fd: RawFd) -> std::io::Result<()> {
    // SAFETY: setns(2) with a descriptor the parent keeps open until the child has exec'd.
    if unsafe { libc::setns(fd, libc::CLONE_NEWNET) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// `ip link set lo up` through the SIOCSIFFLAGS ioctl.
fn loopback_up() -> std::io::Result<()> {
    // SAFETY: a plain datagram socket, closed by OwnedFd.
    let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `raw` is a fresh descriptor owned by nobody else.
    let socket = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(raw) };
    // SAFETY: ifreq is plain data; zeroed is a valid value.
    let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
    for (slot, byte) in request.ifr_name.iter_mut().zip(b"lo\0") {
        *slot = *byte as libc::c_char;
    }
    // The request numbers are c_ulong in glibc's ioctl and c_int in musl's (the static
    // build of the container image): cast to whichever this libc declares.
    let (get, set) = (
        libc::SIOCGIFFLAGS as libc::Ioctl,
        libc::SIOCSIFFLAGS as libc::Ioctl,
    );
    // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS read and write the flags member of a valid ifreq.
    unsafe {
        if libc::ioctl(socket.as_raw_fd(), get, &mut request) < 0 {
            return Err(std::io::Error::last_os_error());
        }
        request.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        if libc::ioctl(socket.as_raw_fd(), set, &request) < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}
