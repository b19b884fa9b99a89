"""pywebtransport 0.8.1's ServerApp with the routes our clients check.

usage: pwt081_server.py CERT_PEM KEY_PEM

Routes: /echo (bidi streams echoed, each uni stream's bytes sent back on a new uni stream,
datagrams echoed), /close-watch (prints the close code and reason the client sent),
/close-by-server (closes with 4000 "server bye"), /server-bidi (opens a bidi stream, sends
"hello from server", closes with code 1 and the client's reply as reason).
"""

from __future__ import annotations

import asyncio
import sys

import pywebtransport
from pywebtransport import ServerApp, ServerConfig, WebTransportStream
from pywebtransport.types import EventType

import peer_common as pc

PEER = "pwt081"
log = pc.setup_logging(PEER)


def closed_event(session) -> tuple[asyncio.Event, dict]:
    seen: dict = {}
    done = asyncio.Event()

    async def on_closed(event) -> None:
        if not done.is_set():
            data = event.data if isinstance(event.data, dict) else {}
            seen.update(code=data.get("code"), reason=data.get("reason"))
            done.set()

    session.on(event_type=EventType.SESSION_CLOSED, handler=on_closed)
    return done, seen


async def echo_bidi(stream) -> None:
    try:
        while True:
            chunk = await stream.read(size=65536)
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
        await send.write(data=data, end_stream=True)
    except Exception as e:
        log.warning("uni echo: %s", e)


async def echo_datagrams(transport) -> None:
    while True:
        try:
            data = await transport.receive()
            await transport.send(data=data)
        except Exception as e:
            log.debug("datagram echo ends: %s", e)
            return


def make_app(cert: str, key: str, port: int) -> ServerApp:
    app = ServerApp(
        config=ServerConfig(
            bind_host="127.0.0.1",
            bind_port=port,
            certfile=cert,
            keyfile=key,
            # 0.8.1 defaults these to 0, and then neither side can open a stream.
            initial_max_data=16 << 20,
            initial_max_streams_bidi=100,
            initial_max_streams_uni=100,
            max_datagram_size=65535,
            read_timeout=30.0,
            write_timeout=30.0,
        )
    )

    @app.route(path="/echo")
    async def echo(session) -> None:
        done, _ = closed_event(session)
        transport = await session.create_datagram_transport()
        tasks = {asyncio.create_task(echo_datagrams(transport))}

        async def streams() -> None:
            async for stream in session.incoming_streams():
                if isinstance(stream, WebTransportStream):
                    tasks.add(asyncio.create_task(echo_bidi(stream)))
                else:
                    tasks.add(asyncio.create_task(echo_uni(session, stream)))

        tasks.add(asyncio.create_task(streams()))
        await done.wait()
        for t in tasks:
            t.cancel()

    @app.route(path="/close-watch")
    async def close_watch(session) -> None:
        done, seen = closed_event(session)
        await done.wait()
        pc.emit(event="observed", what="close", path="/close-watch", code=seen["code"], reason=seen["reason"])

    @app.route(path="/close-by-server")
    async def close_by_server(session) -> None:
        await session.close(code=pc.SERVER_CLOSE_CODE, reason=pc.SERVER_CLOSE_REASON, close_connection=False)

    @app.route(path="/server-bidi")
    async def server_bidi(session) -> None:
        stream = await session.create_bidirectional_stream()
        await stream.write(data=b"hello from server", end_stream=True)
        reply = await stream.read_all()
        await session.close(code=1, reason=reply.decode("utf-8", "replace"), close_connection=False)

    return app


async def main() -> None:
    cert, key = pc.server_args(sys.argv)
    port = pc.free_udp_port()
    app = make_app(cert, key, port)
    async with app:
        await app.server.listen(host="127.0.0.1", port=port)
        pc.emit(event="ready", peer=PEER, version=pywebtransport.__version__, port=port)
        await app.server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
