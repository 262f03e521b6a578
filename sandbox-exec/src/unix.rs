//! Unix-socket ancillary data both sides of the server protocol use: descriptors
//! (`SCM_RIGHTS`) and the sender's credentials (`SCM_CREDENTIALS`).

use std::io::Error;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// The most descriptors one message carries.
const MAX_FDS: usize = 4;

fn cmsg_space(bytes: usize) -> usize {
    // SAFETY: CMSG_SPACE is arithmetic.
    unsafe { libc::CMSG_SPACE(bytes as u32) as usize }
}

/// Sends `byte` with `fds` attached; never raises SIGPIPE.
pub fn send_fds(socket: RawFd, byte: u8, fds: &[RawFd]) -> std::io::Result<()> {
    let fds = &fds[..fds.len().min(MAX_FDS)];
    let payload = std::mem::size_of_val(fds);
    let mut data = [byte];
    let mut iov = libc::iovec {
        iov_base: data.as_mut_ptr().cast(),
        iov_len: 1,
    };
    let mut control = vec![0u8; cmsg_space(payload)];
    // SAFETY: msghdr is plain data; the control buffer is sized by CMSG_SPACE for `payload`,
    // and CMSG_FIRSTHDR of a non-empty buffer is valid.
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        if !fds.is_empty() {
            msg.msg_control = control.as_mut_ptr().cast();
            msg.msg_controllen = control.len() as _;
            let header = libc::CMSG_FIRSTHDR(&msg);
            (*header).cmsg_level = libc::SOL_SOCKET;
            (*header).cmsg_type = libc::SCM_RIGHTS;
            (*header).cmsg_len = libc::CMSG_LEN(payload as u32) as _;
            std::ptr::copy_nonoverlapping(
                fds.as_ptr().cast::<u8>(),
                libc::CMSG_DATA(header),
                payload,
            );
        }
        if libc::sendmsg(socket, &msg, libc::MSG_NOSIGNAL) < 0 {
            return Err(Error::last_os_error());
        }
    }
    Ok(())
}

/// One received message: its first byte (`None` at end of stream), the descriptors it
/// carried (close-on-exec), and the sender's pid when the receiver set `SO_PASSCRED`.
#[derive(Debug)]
pub struct Received {
    pub byte: Option<u8>,
    pub fds: Vec<OwnedFd>,
    pub pid: Option<libc::pid_t>,
}

/// Receives one byte with whatever descriptors and credentials come with it.
pub fn receive(socket: RawFd) -> std::io::Result<Received> {
    let mut data = [0u8; 1];
    let mut iov = libc::iovec {
        iov_base: data.as_mut_ptr().cast(),
        iov_len: 1,
    };
    let space = cmsg_space(MAX_FDS * std::mem::size_of::<RawFd>())
        + cmsg_space(std::mem::size_of::<libc::ucred>());
    let mut control = vec![0u8; space];
    let mut received = Received {
        byte: None,
        fds: Vec::new(),
        pid: None,
    };
    // SAFETY: recvmsg fills the buffers it is given; the control messages are walked with
    // the CMSG macros within `msg_controllen`, and each descriptor received is owned here.
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = control.len() as _;
        let n = libc::recvmsg(socket, &mut msg, libc::MSG_CMSG_CLOEXEC);
        if n < 0 {
            return Err(Error::last_os_error());
        }
        let mut header = libc::CMSG_FIRSTHDR(&msg);
        while !header.is_null() {
            let len = (*header).cmsg_len as usize - libc::CMSG_LEN(0) as usize;
            let payload = libc::CMSG_DATA(header);
            match ((*header).cmsg_level, (*header).cmsg_type) {
                (libc::SOL_SOCKET, libc::SCM_RIGHTS) => {
                    for i in 0..len / std::mem::size_of::<RawFd>() {
                        let fd = std::ptr::read_unaligned(payload.cast::<RawFd>().add(i));
                        received.fds.push(OwnedFd::from_raw_fd(fd));
                    }
                }
                (libc::SOL_SOCKET, libc::SCM_CREDENTIALS) => {
                    let creds = std::ptr::read_unaligned(payload.cast::<libc::ucred>());
                    received.pid = Some(creds.pid);
                }
                _ => {}
            }
            header = libc::CMSG_NXTHDR(&msg, header);
        }
        if n > 0 {
            received.byte = Some(data[0]);
        }
    }
    Ok(received)
}

/// Asks the kernel to attach the sender's credentials to every message `socket` receives.
pub fn pass_credentials(socket: &impl AsRawFd) -> std::io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: setsockopt with a pointer to an int of the size given.
    let result = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PASSCRED,
            (&raw const on).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if result < 0 {
        return Err(Error::last_os_error());
    }
    Ok(())
}

/// A connected `SOCK_SEQPACKET` pair, both ends close-on-exec.
pub fn seqpacket_pair() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: socketpair writes two descriptors, owned here from then on.
    unsafe {
        if libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        ) < 0
        {
            return Err(Error::last_os_error());
        }
        Ok((OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixStream;

    #[test]
    fn descriptors_and_credentials_arrive() {
        let (a, b) = seqpacket_pair().expect("pair");
        let (x, _y) = UnixStream::pair().expect("stream pair");
        pass_credentials(&b).expect("passcred");
        send_fds(a.as_raw_fd(), b'Q', &[x.as_raw_fd()]).expect("send");
        let got = receive(b.as_raw_fd()).expect("receive");
        assert_eq!(got.byte, Some(b'Q'));
        assert_eq!(got.fds.len(), 1);
        assert_eq!(got.pid, Some(std::process::id() as libc::pid_t));
        drop(a);
        assert_eq!(receive(b.as_raw_fd()).expect("eof").byte, None);
    }
}
