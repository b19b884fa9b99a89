"""A WebTransport server on aioquic 1.7.2 (aioquic_wt.py) with the routes our clients check.

usage: aioquic_server.py CERT_PEM KEY_PEM

Routes: /echo (bidi streams echoed, each uni stream's bytes sent back on a new uni stream,
datagrams echoed), /close-watch (prints the close code and reason the client sent),
/close-by-server (closes with 4000 "server bye"), /server-bidi (opens a bidi stream, sends
"hello from server", closes with code 1 and the client's reply as reason); anything else
is refused with 404.
"""

from __future__ import annotations

import asyncio
import sys

import aioquic
from aioquic.asyncio.server import serve
from aioquic.h3.connection import H3_ALPN
from aioquic.quic.configuration import QuicConfiguration

import peer_common as pc
from aioquic_wt import WebTransportProtocol

PEER = "aioquic"
log = pc.setup_logging(PEER)
TASKS: set[asyncio.Task] = set()


def spawn(coro) -> None:
    task = asyncio.create_task(coro)
    TASKS.add(task)
    task.add_done_callback(TASKS.discard)


async def echo(proto, session) -> None:
    session.echo_bidi = True

    async def uni() -> None:
        while True:
            incoming = await session.incoming_uni.get()
            data = await proto.read_all(incoming)
            sid = proto.open_stream(session, unidirectional=True)
            proto.send(sid, data, end=True)

    async def datagrams() -> None:
        while True:
            proto.send_datagram(session, await session.datagrams.get())

    tasks = [asyncio.create_task(uni()), asyncio.create_task(datagrams())]
    await asyncio.wait([session.closed, proto.terminated], return_when=asyncio.FIRST_COMPLETED)
    for t in tasks:
        t.cancel()


async def close_watch(proto, session) -> None:
    code, reason, _ = await session.closed
    pc.emit(event="observed", what="close", path="/close-watch", code=code, reason=reason)


async def close_by_server(proto, session) -> None:
    proto.close_session(session, pc.SERVER_CLOSE_CODE, pc.SERVER_CLOSE_REASON)


async def server_bidi(proto, session) -> None:
    sid = proto.open_stream(session, unidirectional=False)
    proto.send(sid, b"hello from server", end=True)
    reply = await proto.read_all(sid)
    proto.close_session(session, 1, reply.decode("utf-8", "replace"))


ROUTES = {
    "/echo": echo,
    "/close-watch": close_watch,
    "/close-by-server": close_by_server,
    "/server-bidi": server_bidi,
}


def on_request(proto, stream_id: int, headers: dict) -> None:
    path = headers.get(b":path", b"").decode()
    if headers.get(b":protocol") != b"webtransport" or path not in ROUTES:
        proto.reject(stream_id, 404)
        return
    session = proto.accept(stream_id, path)

    async def run() -> None:
        try:
            await ROUTES[path](proto, session)
        except Exception as e:
            log.warning("session on %s: %s", path, e)

    spawn(run())


class ServerProtocol(WebTransportProtocol):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.on_request = on_request


async def main() -> None:
    cert, key = pc.server_args(sys.argv)
    port = pc.free_udp_port()
    config = QuicConfiguration(is_client=False, alpn_protocols=H3_ALPN, max_datagram_frame_size=65536)
    config.load_cert_chain(cert, key)
    server = await serve("127.0.0.1", port, configuration=config, create_protocol=ServerProtocol)
    pc.emit(event="ready", peer=PEER, version=aioquic.__version__, port=port)
    try:
        await asyncio.Future()
    finally:
        server.close()


if __name__ == "__main__":
    asyncio.run(main())
