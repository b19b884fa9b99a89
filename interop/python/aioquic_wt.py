"""A small WebTransport endpoint on aioquic 1.7.2's H3Connection (enable_webtransport),
used by aioquic_client.py and aioquic_server.py.

aioquic gives the building blocks (extended CONNECT, the 0x41 / 0x54 stream preambles,
HTTP datagrams) but no sessions: this module keeps per-stream buffers and per-session
state (capsules on the CONNECT stream, incoming streams, datagrams, close code and reason)
and exposes them as awaitables.
"""

from __future__ import annotations

import asyncio
import struct
from dataclasses import dataclass, field

from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.buffer import Buffer, BufferReadError, encode_uint_var
from aioquic.h3.connection import H3Connection
from aioquic.h3.events import DataReceived, DatagramReceived, HeadersReceived, WebTransportStreamDataReceived
from aioquic.quic.events import ConnectionTerminated, ProtocolNegotiated, StreamDataReceived, StreamReset

CLOSE_WEBTRANSPORT_SESSION = 0x2843
DRAIN_WEBTRANSPORT_SESSION = 0x78AE


@dataclass
class Stream:
    id: int
    data: bytearray = field(default_factory=bytearray)
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    reset_code: int | None = None


@dataclass
class Session:
    id: int
    path: str = ""
    status: asyncio.Future = field(default_factory=lambda: asyncio.get_running_loop().create_future())
    closed: asyncio.Future = field(default_factory=lambda: asyncio.get_running_loop().create_future())
    capsules: bytearray = field(default_factory=bytearray)
    incoming_bidi: asyncio.Queue = field(default_factory=asyncio.Queue)
    incoming_uni: asyncio.Queue = field(default_factory=asyncio.Queue)
    datagrams: asyncio.Queue = field(default_factory=asyncio.Queue)
    # Server side: echo bidi streams as their bytes arrive (set by the route).
    echo_bidi: bool = False


def close_capsule(code: int, reason: str) -> bytes:
    payload = struct.pack("!I", code) + reason.encode("utf-8")
    return encode_uint_var(CLOSE_WEBTRANSPORT_SESSION) + encode_uint_var(len(payload)) + payload


class WebTransportProtocol(QuicConnectionProtocol):
    """One QUIC connection: HTTP/3 with WebTransport, either role."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.h3: H3Connection | None = None
        self.sessions: dict[int, Session] = {}
        self.streams: dict[int, Stream] = {}
        self.stream_session: dict[int, int] = {}
        # Bidi WebTransport streams we opened. aioquic 1.7.2's create_webtransport_stream
        # does not mark them as WebTransport streams, so H3Connection parses the peer's
        # bytes on them as HTTP/3 frames and closes the connection with H3_FRAME_ERROR
        # (docs/interop.md). Their QUIC events are handled here and never reach it.
        self.own_bidi: set[int] = set()
        # Server side: called with (protocol, stream_id, headers) for each CONNECT request.
        self.on_request = None
        self.terminated = asyncio.get_running_loop().create_future()
        if self._quic.configuration.is_client:
            self.h3 = H3Connection(self._quic, enable_webtransport=True)

    # -- commands ---------------------------------------------------------------------

    def open_session(self, authority: str, path: str) -> Session:
        stream_id = self._quic.get_next_available_stream_id()
        session = Session(id=stream_id, path=path)
        self.sessions[stream_id] = session
        self.h3.send_headers(
            stream_id,
            [
                (b":method", b"CONNECT"),
                (b":protocol", b"webtransport"),
                (b":scheme", b"https"),
                (b":authority", authority.encode()),
                (b":path", path.encode()),
                (b"origin", f"https://{authority}".encode()),
                (b"sec-webtransport-http3-draft02", b"1"),
            ],
            end_stream=False,
        )
        self.transmit()
        return session

    def accept(self, stream_id: int, path: str) -> Session:
        session = Session(id=stream_id, path=path)
        session.status.set_result(200)
        self.sessions[stream_id] = session
        self.h3.send_headers(stream_id, [(b":status", b"200"), (b"sec-webtransport-http3-draft", b"draft02")])
        self.transmit()
        return session

    def reject(self, stream_id: int, status: int) -> None:
        self.h3.send_headers(stream_id, [(b":status", str(status).encode())], end_stream=True)
        self.transmit()

    def open_stream(self, session: Session, unidirectional: bool) -> int:
        stream_id = self.h3.create_webtransport_stream(session.id, is_unidirectional=unidirectional)
        if not unidirectional:
            self.own_bidi.add(stream_id)
        self.stream_session[stream_id] = session.id
        self.streams[stream_id] = Stream(id=stream_id)
        self.transmit()
        return stream_id

    def send(self, stream_id: int, data: bytes, end: bool = False) -> None:
        self._quic.send_stream_data(stream_id, data, end_stream=end)
        self.transmit()

    def send_datagram(self, session: Session, data: bytes) -> None:
        self.h3.send_datagram(session.id, data)
        self.transmit()

    def close_session(self, session: Session, code: int, reason: str) -> None:
        # The capsule goes inside an HTTP/3 DATA frame (H3Connection.send_data), then FIN.
        self.h3.send_data(session.id, close_capsule(code, reason), end_stream=True)
        self.transmit()
        if not session.closed.done():
            session.closed.set_result((code, reason, False))

    async def read_all(self, stream_id: int) -> bytes:
        stream = self.streams.setdefault(stream_id, Stream(id=stream_id))
        await stream.ended.wait()
        if stream.reset_code is not None:
            raise ConnectionError(f"stream {stream_id} reset with {stream.reset_code:#x}")
        return bytes(stream.data)

    # -- events -----------------------------------------------------------------------

    def quic_event_received(self, event) -> None:
        if isinstance(event, ProtocolNegotiated) and self.h3 is None:
            self.h3 = H3Connection(self._quic, enable_webtransport=True)
        if isinstance(event, StreamReset):
            stream = self.streams.get(event.stream_id)
            if stream is not None:
                stream.reset_code = event.error_code
                stream.ended.set()
            session = self.sessions.get(event.stream_id)
            if session is not None and not session.closed.done():
                session.closed.set_result((None, f"CONNECT stream reset {event.error_code:#x}", True))
        if isinstance(event, ConnectionTerminated):
            for session in self.sessions.values():
                if not session.status.done():
                    session.status.set_exception(ConnectionError(f"connection closed {event.error_code:#x}"))
                if not session.closed.done():
                    session.closed.set_result((None, f"connection closed {event.error_code:#x} {event.reason_phrase}", True))
            for stream in self.streams.values():
                stream.ended.set()
            if not self.terminated.done():
                self.terminated.set_result(event)
        if isinstance(event, StreamDataReceived) and event.stream_id in self.own_bidi:
            stream = self.streams[event.stream_id]
            stream.data += event.data
            if event.end_stream:
                stream.ended.set()
            return
        if self.h3 is not None:
            for h3_event in self.h3.handle_event(event):
                self.h3_event(h3_event)

    def h3_event(self, event) -> None:
        if isinstance(event, HeadersReceived):
            headers = dict(event.headers)
            session = self.sessions.get(event.stream_id)
            if session is not None and not session.status.done():
                session.status.set_result(int(headers.get(b":status", b"0")))
            elif headers.get(b":method") == b"CONNECT" and self.on_request is not None:
                self.on_request(self, event.stream_id, headers)
        elif isinstance(event, DataReceived):
            session = self.sessions.get(event.stream_id)
            if session is None:
                return
            session.capsules += event.data
            self.read_capsules(session)
            if event.stream_ended and not session.closed.done():
                session.closed.set_result((0, "", True))
        elif isinstance(event, WebTransportStreamDataReceived):
            session = self.sessions.get(event.session_id)
            stream = self.streams.get(event.stream_id)
            if stream is None:
                stream = self.streams[event.stream_id] = Stream(id=event.stream_id)
                self.stream_session[event.stream_id] = event.session_id
                if session is not None:
                    unidirectional = event.stream_id & 2 == 2
                    (session.incoming_uni if unidirectional else session.incoming_bidi).put_nowait(event.stream_id)
            if session is not None and session.echo_bidi and event.stream_id & 2 == 0:
                # Echo as the bytes arrive: waiting for the end could stall on flow control.
                self._quic.send_stream_data(event.stream_id, event.data, end_stream=event.stream_ended)
                self.transmit()
            stream.data += event.data
            if event.stream_ended:
                stream.ended.set()
        elif isinstance(event, DatagramReceived):
            session = self.sessions.get(event.stream_id)
            if session is not None:
                session.datagrams.put_nowait(event.data)

    def read_capsules(self, session: Session) -> None:
        while True:
            buf = Buffer(data=bytes(session.capsules))
            try:
                ty = buf.pull_uint_var()
                length = buf.pull_uint_var()
                payload = buf.pull_bytes(length)
            except BufferReadError:
                return
            del session.capsules[: buf.tell()]
            if ty == CLOSE_WEBTRANSPORT_SESSION and not session.closed.done():
                code = struct.unpack("!I", payload[:4])[0]
                session.closed.set_result((code, payload[4:].decode("utf-8", "replace"), True))
            # DRAIN and unknown (GREASE) capsules are skipped.
