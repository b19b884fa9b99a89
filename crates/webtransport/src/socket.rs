//! UDP sockets for QUIC endpoints, with the kernel buffer sizes of a [`TransportConfig`].
//!
//! Every endpoint this crate makes (a [`Server`](crate::Server)'s, a
//! [`Client`](crate::Client)'s) gets its socket here; [`bind`] is the same for an
//! application that builds its own quinn endpoint.

use std::io;
use std::net::{SocketAddr, UdpSocket};

use socket2::{Domain, Protocol, Socket, Type};
use tracing::debug;

use crate::config::TransportConfig;

/// A UDP socket bound to `addr`, with `transport`'s `socket_receive_buffer` and
/// `socket_send_buffer` asked of the kernel (which may grant less: Linux caps them at
/// `net.core.rmem_max` and `net.core.wmem_max`). For `quinn::Endpoint::new`.
pub fn bind(addr: SocketAddr, transport: &TransportConfig) -> io::Result<UdpSocket> {
    bind_with(addr, false, transport)
}

/// [`bind`], IPv6-only when `only_v6` (an IPv6 address served beside an IPv4 one of the
/// same port).
pub(crate) fn bind_with(
    addr: SocketAddr,
    only_v6: bool,
    transport: &TransportConfig,
) -> io::Result<UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if only_v6 {
        socket.set_only_v6(true)?;
    }
    let receive = transport.socket_receive_buffer;
    if receive > 0 {
        socket.set_recv_buffer_size(receive)?;
        granted(addr, "receive", receive, socket.recv_buffer_size()?);
    }
    let send = transport.socket_send_buffer;
    if send > 0 {
        socket.set_send_buffer_size(send)?;
        granted(addr, "send", send, socket.send_buffer_size()?);
    }
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// Says so when the kernel granted less than asked. (Linux reports twice what it grants,
/// the other half being its own bookkeeping, so only a cap under half is seen here.)
fn granted(addr: SocketAddr, which: &str, asked: usize, got: usize) {
    if got < asked {
        debug!(%addr, asked, got, "UDP socket {which} buffer capped by the system (Linux: net.core.rmem_max / wmem_max)");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Binds a socket asking for these buffer sizes; the sizes it got.
    fn bound_with(receive: usize, send: usize) -> (usize, usize) {
        let config = TransportConfig {
            socket_receive_buffer: receive,
            socket_send_buffer: send,
            ..TransportConfig::default()
        };
        let s = bind("127.0.0.1:0".parse().unwrap(), &config).unwrap();
        assert!(s.local_addr().unwrap().port() != 0);
        let r = socket2::SockRef::from(&s);
        (r.recv_buffer_size().unwrap(), r.send_buffer_size().unwrap())
    }

    /// The sizes asked for reach the socket (within what the system allows), and zero
    /// leaves the system's default.
    #[test]
    fn buffers_are_asked_of_the_kernel_and_zero_keeps_its_default() {
        let (plain_recv, plain_send) = bound_with(0, 0);
        // Smaller than any system's default and above Linux's floor, so never capped.
        let (recv, send) = bound_with(8192, 8192);
        assert!(
            recv != plain_recv && recv >= 8192,
            "{recv} (default {plain_recv})"
        );
        assert!(
            send != plain_send && send >= 8192,
            "{send} (default {plain_send})"
        );
    }
}
