"""The newest pywebtransport's server (0.21, draft-16 only) with the routes our clients check.

usage: pwtnew_server.py CERT_PEM KEY_PEM

0.21 has no ServerApp: WebTransportServer yields connections, each connection its session
requests, which are routed here. Routes: /echo (bidi streams echoed, each uni stream's
bytes sent back on a new uni stream, datagrams echoed), /close-watch (prints the close
code and reason the client sent), /close-by-server (closes with 4000 "server bye"),
/server-bidi (opens a bidi stream, sends "hello from server", closes with code 1 and the
client's reply as reason); anything else is refused with 404.
"""

from __future__ import annotations

import asyncio
import sys

import pywebtransport
from pywebtransport import ServerConfig, WebTransportServer
from pywebtransport.types import EventType

import peer_common as pc

PEER = "pwtnew"
log = pc.setup_logging(PEER)
TASKS: set[asyncio.Task] = set()


def spawn(coro) -> asyncio.Task:
    task = asyncio.create_task(coro)
    TASKS.add(task)
    task.add_done_callback(TASKS.discard)
    return task


def closed_event(session) -> tuple[asyncio.Event, dict]:
    seen: dict = {}
    done = asyncio.Event()

    async def on_closed(event) -> None:
        if not done.is_set():
            data = event.data if isinstance(event.data, dict) else {}
            seen.update(code=data.get("error_code"), reason=data.get("reason"))
            done.set()

    session.events.on(event_type=EventType.SESSION_CLOSED, handler=on_closed)
    return done, seen


async def echo_bidi(stream) -> None:
    try:
        while True:
            chunk = await stream.read(max_size=65536)
            if not chunk:
                break
            await stream.write(data=chunk)
        await stream.write(data=b"", end_stream=True)
    except Exception as e:
        log.warning("bidi echo: %s", e)


async def echo_uni(session, stream) -> None:
    try:
        data = await stream.read_all()
        send = await session.create_unidirectional_stream()
        await send.write_all(data=data, end_stream=True)
    except Exception as e:
        log.warning("uni echo: %s", e)


async def echo(session) -> None:
    done, _ = closed_event(session)

    async def bidi() -> None:
        async for stream in session.incoming_bidirectional_streams():
            spawn(echo_bidi(stream))

    async def uni() -> None:
        async for stream in session.incoming_unidirectional_streams():
            spawn(echo_uni(session, stream))

    async def datagrams() -> None:
        while True:
            try:
                data = await session.read_datagram()
                await session.send_datagram(data=data)
            except Exception as e:
                log.debug("datagram echo ends: %s", e)
                return

    tasks = [spawn(bidi()), spawn(uni()), spawn(datagrams())]
    await done.wait()
    for t in tasks:
        t.cancel()


async def close_watch(session) -> None:
    done, seen = closed_event(session)
    await done.wait()
    pc.emit(event="observed", what="close", path="/close-watch", code=seen["code"], reason=seen["reason"])


async def server_bidi(session) -> None:
    stream = await session.create_bidirectional_stream()
    await stream.write_all(data=b"hello from server", end_stream=True)
    reply = await stream.read_all()
    await session.close(error_code=1, reason=reply.decode("utf-8", "replace"))


async def handle_session(session) -> None:
    routes = {
        "/echo": echo,
        "/close-watch": close_watch,
        "/close-by-server": lambda s: s.close(error_code=pc.SERVER_CLOSE_CODE, reason=pc.SERVER_CLOSE_REASON),
        "/server-bidi": server_bidi,
    }
    route = routes.get(session.path)
    try:
        if route is None:
            await session.reject(status_code=404)
            return
        await session.accept()
        await route(session)
    except Exception as e:
        log.warning("session %s on %s: %s", session.session_id, session.path, e)


async def handle_connection(connection) -> None:
    async for session in connection.incoming_sessions():
        spawn(handle_session(session))


async def main() -> None:
    cert, key = pc.server_args(sys.argv)
    port = pc.free_udp_port()
    config = ServerConfig(
        bind_host="127.0.0.1",
        bind_port=port,
        certfile=cert,
        keyfile=key,
        initial_max_data=16 << 20,
        initial_max_streams_bidi=100,
        initial_max_streams_uni=100,
    )
    async with WebTransportServer(config=config) as server:
        await server.listen()
        pc.emit(event="ready", peer=PEER, version=pywebtransport.__version__, port=port)
        async for connection in server.incoming_connections():
            spawn(handle_connection(connection))


if __name__ == "__main__":
    asyncio.run(main())
