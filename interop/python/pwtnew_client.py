"""The newest pywebtransport's client (0.21, draft-16 only) against one of our servers.

usage: pwtnew_client.py https://127.0.0.1:PORT routes|echo

`routes` runs every check against the interop route server (interop/src/lib.rs); `echo`
runs those an echo server answers (`wt serve`), closing the /echo session with code 4242.
"""

from __future__ import annotations

import asyncio
import ssl
import sys

import pywebtransport
from pywebtransport import ClientConfig, WebTransportClient
from pywebtransport.types import EventType

import peer_common as pc

PEER = "pwtnew"
log = pc.setup_logging(PEER)


def config() -> ClientConfig:
    return ClientConfig(
        verify_mode=ssl.CERT_NONE,
        connect_timeout=pc.CHECK_TIMEOUT,
        stream_create_timeout=pc.CHECK_TIMEOUT,
        read_timeout=pc.CHECK_TIMEOUT,
        initial_max_data=16 << 20,
        initial_max_streams_bidi=100,
        initial_max_streams_uni=100,
    )


class CloseWatch:
    """Records the code and reason of the session's SESSION_CLOSED event."""

    def __init__(self, session) -> None:
        self.code = None
        self.reason = None
        self.done = asyncio.Event()
        session.events.on(event_type=EventType.SESSION_CLOSED, handler=self._on_closed)

    async def _on_closed(self, event) -> None:
        if not self.done.is_set():
            data = event.data if isinstance(event.data, dict) else {}
            self.code, self.reason = data.get("error_code"), data.get("reason")
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
    send = await session.create_unidirectional_stream()
    await send.write_all(data=pc.UNI_MESSAGE, end_stream=True)
    async for stream in session.incoming_unidirectional_streams():
        echo = await stream.read_all()
        return pc.expect_equal(pc.UNI_MESSAGE, echo) + f" on server stream {stream.stream_id}"
    raise AssertionError("session ended before the server opened a stream")


async def datagram_echo(session) -> str:
    for attempt in range(1, pc.DATAGRAM_TRIES + 1):
        await session.send_datagram(data=pc.DATAGRAM_MESSAGE)
        try:
            echo = await asyncio.wait_for(session.read_datagram(), pc.DATAGRAM_WAIT)
        except asyncio.TimeoutError:
            continue
        return pc.expect_equal(pc.DATAGRAM_MESSAGE, echo) + f" (attempt {attempt})"
    raise AssertionError(f"no echo of {pc.DATAGRAM_TRIES} datagrams")


async def close_by_client(session) -> str:
    reason = f"bye from {PEER}"
    await session.close(error_code=pc.CLOSE_CODE, reason=reason)
    # Give the capsule time to leave before the connection goes away.
    await asyncio.sleep(0.2)
    return f"sent code {pc.CLOSE_CODE} reason {reason!r}"


async def server_bidi(client, base: str) -> str:
    session = await client.connect(url=f"{base}/server-bidi")
    watch = CloseWatch(session)
    async for stream in session.incoming_bidirectional_streams():
        hello = await stream.read_all()
        if hello != b"hello from server":
            raise AssertionError(f"server said {hello!r}")
        await stream.write_all(data=f"reply from {PEER}".encode(), end_stream=True)
        break
    await watch.done.wait()
    return pc.expect_close(watch.code, watch.reason, 1, f"reply from {PEER}")


async def close_by_server(client, base: str) -> str:
    session = await client.connect(url=f"{base}/close-by-server")
    watch = CloseWatch(session)
    await watch.done.wait()
    return pc.expect_close(watch.code, watch.reason, pc.SERVER_CLOSE_CODE, pc.SERVER_CLOSE_REASON)


async def close_watch(client, base: str) -> str:
    session = await client.connect(url=f"{base}/close-watch")
    return await close_by_client(session)


async def main() -> int:
    base, mode = pc.client_args(sys.argv)
    checks = pc.Checks()
    async with WebTransportClient(config=config()) as client:
        session = None

        async def open_echo() -> str:
            nonlocal session
            session = await client.connect(url=f"{base}/echo")
            return f"pywebtransport {pywebtransport.__version__} session {session.session_id}"

        if await checks.run("session", open_echo):
            await checks.run("bidi_echo", lambda: bidi_echo(session, pc.BIDI_MESSAGE))
            await checks.run("bidi_echo_256k", lambda: bidi_echo(session, pc.big_payload()))
            await checks.run("uni_echo", lambda: uni_echo(session))
            await checks.run("datagram_echo", lambda: datagram_echo(session))
            if mode == "echo":
                await checks.run("close_by_client", lambda: close_by_client(session))
            else:
                await session.close()
        if mode == "routes":
            await checks.run("server_bidi", lambda: server_bidi(client, base))
            await checks.run("close_by_server", lambda: close_by_server(client, base))
            await checks.run("close_by_client", lambda: close_watch(client, base))
    return checks.summary()


if __name__ == "__main__":
    sys.exit(asyncio.run(asyncio.wait_for(main(), 120)))
