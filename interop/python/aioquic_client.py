"""A WebTransport client on aioquic 1.7.2 (aioquic_wt.py) against one of our servers.

usage: aioquic_client.py https://127.0.0.1:PORT routes|echo

`routes` runs every check against the interop route server (interop/src/lib.rs); `echo`
runs those an echo server answers (`wt serve`), closing the /echo session with code 4242.
Each session gets its own QUIC connection, as a browser without pooling does.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import sys
from urllib.parse import urlsplit

import aioquic
from aioquic.asyncio.client import connect
from aioquic.h3.connection import H3_ALPN
from aioquic.quic.configuration import QuicConfiguration

import peer_common as pc
from aioquic_wt import WebTransportProtocol

PEER = "aioquic"
log = pc.setup_logging(PEER)


@contextlib.asynccontextmanager
async def session_to(base: str, path: str):
    url = urlsplit(base)
    config = QuicConfiguration(
        is_client=True,
        alpn_protocols=H3_ALPN,
        verify_mode=ssl.CERT_NONE,
        max_datagram_frame_size=65536,
        server_name="localhost",
    )
    async with connect(url.hostname, url.port, configuration=config, create_protocol=WebTransportProtocol) as proto:
        session = proto.open_session(url.netloc, path)
        status = await session.status
        if status != 200:
            raise AssertionError(f"{path}: status {status}")
        yield proto, session


async def bidi_echo(proto, session, payload: bytes) -> str:
    sid = proto.open_stream(session, unidirectional=False)
    proto.send(sid, payload, end=True)
    echo = await proto.read_all(sid)
    return pc.expect_equal(payload, echo)


async def uni_echo(proto, session) -> str:
    sid = proto.open_stream(session, unidirectional=True)
    proto.send(sid, pc.UNI_MESSAGE, end=True)
    incoming = await session.incoming_uni.get()
    echo = await proto.read_all(incoming)
    return pc.expect_equal(pc.UNI_MESSAGE, echo) + f" on server stream {incoming}"


async def datagram_echo(proto, session) -> str:
    for attempt in range(1, pc.DATAGRAM_TRIES + 1):
        proto.send_datagram(session, pc.DATAGRAM_MESSAGE)
        try:
            echo = await asyncio.wait_for(session.datagrams.get(), pc.DATAGRAM_WAIT)
        except asyncio.TimeoutError:
            continue
        return pc.expect_equal(pc.DATAGRAM_MESSAGE, echo) + f" (attempt {attempt})"
    raise AssertionError(f"no echo of {pc.DATAGRAM_TRIES} datagrams")


async def close_by_client(proto, session) -> str:
    reason = f"bye from {PEER}"
    proto.close_session(session, pc.CLOSE_CODE, reason)
    # Give the capsule time to be acknowledged before the connection goes away.
    await asyncio.sleep(0.2)
    return f"sent code {pc.CLOSE_CODE} reason {reason!r}"


async def server_bidi(base: str) -> str:
    async with session_to(base, "/server-bidi") as (proto, session):
        sid = await session.incoming_bidi.get()
        hello = await proto.read_all(sid)
        if hello != b"hello from server":
            raise AssertionError(f"server said {hello!r}")
        proto.send(sid, f"reply from {PEER}".encode(), end=True)
        code, reason, remote = await session.closed
        return pc.expect_close(code, reason, 1, f"reply from {PEER}")


async def close_by_server(base: str) -> str:
    async with session_to(base, "/close-by-server") as (proto, session):
        code, reason, remote = await session.closed
        return pc.expect_close(code, reason, pc.SERVER_CLOSE_CODE, pc.SERVER_CLOSE_REASON)


async def close_watch(base: str) -> str:
    async with session_to(base, "/close-watch") as (proto, session):
        return await close_by_client(proto, session)


async def main() -> int:
    base, mode = pc.client_args(sys.argv)
    checks = pc.Checks()
    stack = contextlib.AsyncExitStack()
    echo = None

    async def open_echo() -> str:
        nonlocal echo
        echo = await stack.enter_async_context(session_to(base, "/echo"))
        return f"aioquic {aioquic.__version__} session {echo[1].id}"

    async with stack:
        if await checks.run("session", open_echo):
            proto, session = echo
            await checks.run("bidi_echo", lambda: bidi_echo(proto, session, pc.BIDI_MESSAGE))
            await checks.run("bidi_echo_256k", lambda: bidi_echo(proto, session, pc.big_payload()))
            await checks.run("uni_echo", lambda: uni_echo(proto, session))
            await checks.run("datagram_echo", lambda: datagram_echo(proto, session))
            if mode == "echo":
                await checks.run("close_by_client", lambda: close_by_client(proto, session))
    if mode == "routes":
        await checks.run("server_bidi", lambda: server_bidi(base))
        await checks.run("close_by_server", lambda: close_by_server(base))
        await checks.run("close_by_client", lambda: close_watch(base))
    return checks.summary()


if __name__ == "__main__":
    sys.exit(asyncio.run(asyncio.wait_for(main(), 120)))
