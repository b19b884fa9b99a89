"""pywebtransport 0.8.1's client against one of our servers.

usage: pwt081_client.py https://127.0.0.1:PORT routes|echo

`routes` runs every check against the interop route server (interop/src/lib.rs); `echo`
runs those an echo server answers (`wt serve`), closing the /echo session with code 4242.
"""

from __future__ import annotations

import asyncio
import ssl
import sys

import pywebtransport
from pywebtransport import ClientConfig, WebTransportClient, WebTransportSession
from pywebtransport.connection import WebTransportConnection
from pywebtransport.types import EventType

import peer_common as pc

PEER = "pwt081"
log = pc.setup_logging(PEER)


def config() -> ClientConfig:
    return ClientConfig(
        verify_mode=ssl.CERT_NONE,
        connect_timeout=pc.CHECK_TIMEOUT,
        # 0.8.1 defaults these to 0, and then neither side can open a stream.
        initial_max_data=16 << 20,
        initial_max_streams_bidi=100,
        initial_max_streams_uni=100,
        max_datagram_size=65535,
        read_timeout=pc.CHECK_TIMEOUT,
        write_timeout=pc.CHECK_TIMEOUT,
        stream_creation_timeout=pc.CHECK_TIMEOUT,
    )


class EarlyEvents:
    """Works around a race in 0.8.1's client (docs/interop.md).

    WebTransportClient.connect builds the WebTransportSession, which subscribes to the
    protocol handler's events, only after SESSION_READY. A stream the server opens, or a
    close capsule it sends, in the same flight as its 200 is processed before that, and
    the session never hears of it. The client's public connection_factory and
    session_factory hooks record those events from the moment the connection exists and
    hand them to the session once it is built.
    """

    def __init__(self) -> None:
        self.pending: dict[int, list] = {}

    async def connection_factory(self, **kwargs):
        conn = await WebTransportConnection.create_client(**kwargs)
        events: list = []
        self.pending[id(conn)] = events

        async def record(event) -> None:
            events.append(event)

        conn.protocol_handler.on(event_type=EventType.STREAM_OPENED, handler=record)
        conn.protocol_handler.on(event_type=EventType.SESSION_CLOSED, handler=record)
        return conn

    async def session_factory(self, **kwargs):
        session = WebTransportSession(**kwargs)
        await session.initialize()
        session.early_close = None
        session.replayed = 0
        for event in self.pending.pop(id(kwargs["connection"]), []):
            data = event.data if isinstance(event.data, dict) else {}
            if data.get("session_id") != session.session_id:
                continue
            if event.type == EventType.STREAM_OPENED:
                await session._on_stream_opened(event)
                session.replayed += 1
            elif event.type == EventType.SESSION_CLOSED and session.early_close is None:
                session.early_close = (data.get("code"), data.get("reason"))
                session.replayed += 1
        return session


class CloseWatch:
    """Records the code and reason of the session's SESSION_CLOSED event."""

    def __init__(self, session) -> None:
        self.code = None
        self.reason = None
        self.done = asyncio.Event()
        early = getattr(session, "early_close", None)
        if early is not None:
            self.code, self.reason = early
            self.done.set()
        session.on(event_type=EventType.SESSION_CLOSED, handler=self._on_closed)

    async def _on_closed(self, event) -> None:
        if not self.done.is_set():
            data = event.data if isinstance(event.data, dict) else {}
            self.code, self.reason = data.get("code"), data.get("reason")
            self.done.set()


async def bidi_echo(session, payload: bytes) -> str:
    stream = await session.create_bidirectional_stream()

    async def write() -> None:
        for i in range(0, len(payload), 16 * 1024):
            await stream.write(data=payload[i : i + 16 * 1024])
        await stream.write(data=b"", end_stream=True)

    _, echo = await asyncio.gather(write(), stream.read_all())
    return pc.expect_equal(payload, echo)


async def uni_echo(session) -> str:
    incoming = session.incoming_streams()
    send = await session.create_unidirectional_stream()
    await send.write(data=pc.UNI_MESSAGE, end_stream=True)
    async for stream in incoming:
        if not isinstance(stream, pywebtransport.WebTransportStream):
            echo = await stream.read_all()
            return pc.expect_equal(pc.UNI_MESSAGE, echo) + f" on server stream {stream.stream_id}"
    raise AssertionError("session ended before the server opened a stream")


async def datagram_echo(session) -> str:
    transport = await session.create_datagram_transport()
    for attempt in range(1, pc.DATAGRAM_TRIES + 1):
        await transport.send(data=pc.DATAGRAM_MESSAGE)
        try:
            echo = await transport.receive(timeout=pc.DATAGRAM_WAIT)
        except Exception:
            continue
        return pc.expect_equal(pc.DATAGRAM_MESSAGE, echo) + f" (attempt {attempt})"
    raise AssertionError(f"no echo of {pc.DATAGRAM_TRIES} datagrams")


async def close_by_client(session, watch: CloseWatch) -> str:
    reason = f"bye from {PEER}"
    await session.close(code=pc.CLOSE_CODE, reason=reason, close_connection=False)
    await watch.done.wait()
    # Give the capsule time to leave before the connection goes away.
    await asyncio.sleep(0.2)
    return f"sent code {pc.CLOSE_CODE} reason {reason!r}"


async def main() -> int:
    base, mode = pc.client_args(sys.argv)
    checks = pc.Checks()
    early = EarlyEvents()
    client = WebTransportClient(
        config=config(), connection_factory=early.connection_factory, session_factory=early.session_factory
    )
    async with client:
        session = None

        async def open_echo() -> str:
            nonlocal session
            session = await client.connect(url=f"{base}/echo")
            return f"pywebtransport {pywebtransport.__version__} session {session.session_id}"

        if await checks.run("session", open_echo):
            watch = CloseWatch(session)
            await checks.run("bidi_echo", lambda: bidi_echo(session, pc.BIDI_MESSAGE))
            await checks.run("bidi_echo_256k", lambda: bidi_echo(session, pc.big_payload()))
            await checks.run("uni_echo", lambda: uni_echo(session))
            await checks.run("datagram_echo", lambda: datagram_echo(session))
            if mode == "echo":
                await checks.run("close_by_client", lambda: close_by_client(session, watch))
            else:
                await session.close(close_connection=True)
        if mode == "routes":
            await checks.run("server_bidi", lambda: server_bidi(client, base))
            await checks.run("close_by_server", lambda: close_by_server(client, base))
            await checks.run("close_by_client", lambda: close_watch(client, base))
    return checks.summary()


async def server_bidi(client, base: str) -> str:
    session = await client.connect(url=f"{base}/server-bidi")
    watch = CloseWatch(session)
    async for stream in session.incoming_streams():
        if isinstance(stream, pywebtransport.WebTransportStream):
            hello = await stream.read_all()
            if hello != b"hello from server":
                raise AssertionError(f"server said {hello!r}")
            await stream.write(data=f"reply from {PEER}".encode(), end_stream=True)
            break
    await watch.done.wait()
    return pc.expect_close(watch.code, watch.reason, 1, f"reply from {PEER}") + replayed(session)


async def close_by_server(client, base: str) -> str:
    session = await client.connect(url=f"{base}/close-by-server")
    watch = CloseWatch(session)
    await watch.done.wait()
    return pc.expect_close(watch.code, watch.reason, pc.SERVER_CLOSE_CODE, pc.SERVER_CLOSE_REASON) + replayed(session)


def replayed(session) -> str:
    n = getattr(session, "replayed", 0)
    return f" ({n} event(s) from before 0.8.1 built its session object, replayed)" if n else ""


async def close_watch(client, base: str) -> str:
    session = await client.connect(url=f"{base}/close-watch")
    watch = CloseWatch(session)
    return await close_by_client(session, watch)


if __name__ == "__main__":
    sys.exit(asyncio.run(asyncio.wait_for(main(), 120)))
