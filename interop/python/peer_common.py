"""Shared helpers of the Python interop peers (standard library only: the pywebtransport
0.21 environment has nothing else installed).

Every peer prints JSON lines on stdout and logs on stderr:
- a server prints {"event": "ready", "port": P, "peer": NAME, "version": V} once listening,
  and {"event": "observed", ...} for what the Rust side must assert (close codes it saw);
- a client prints {"check": NAME, "ok": bool, "ms": float, "detail": str} per check and a
  final {"summary": "pass"|"fail", "passed": N, "failed": N}.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import sys
import time
from typing import Any, Awaitable, Callable

# What every peer exchanges, so the Rust side can check the same bytes.
BIDI_MESSAGE = b"hello over a bidirectional stream"
UNI_MESSAGE = b"hello over a unidirectional stream"
DATAGRAM_MESSAGE = b"hello datagram"
BIG_LEN = 256 * 1024
CLOSE_CODE = 4242
SERVER_CLOSE_CODE = 4000
SERVER_CLOSE_REASON = "server bye"
CHECK_TIMEOUT = 10.0
DATAGRAM_TRIES = 5
DATAGRAM_WAIT = 1.0


def big_payload() -> bytes:
    """256 KiB that a reordered or repeated chunk would not hide."""
    out = bytearray()
    x = 0x9E3779B97F4A7C15
    while len(out) < BIG_LEN:
        x ^= (x << 13) & 0xFFFFFFFFFFFFFFFF
        x ^= x >> 7
        x ^= (x << 17) & 0xFFFFFFFFFFFFFFFF
        out += x.to_bytes(8, "little")
    return bytes(out[:BIG_LEN])


def emit(**fields: Any) -> None:
    """One JSON line on stdout, flushed at once (the Rust side reads line by line)."""
    sys.stdout.write(json.dumps(fields, sort_keys=True) + "\n")
    sys.stdout.flush()


def setup_logging(peer: str) -> logging.Logger:
    level = logging.DEBUG if os.environ.get("PEER_DEBUG") else logging.WARNING
    logging.basicConfig(stream=sys.stderr, level=level, format=f"{peer} %(levelname)s %(name)s: %(message)s")
    return logging.getLogger(peer)


def free_udp_port(host: str = "127.0.0.1") -> int:
    """A UDP port that was free a moment ago (the peers refuse port 0 in their configs)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class Checks:
    """Runs named checks, each bounded by a timeout, and prints one line per check."""

    def __init__(self) -> None:
        self.passed = 0
        self.failed = 0

    async def run(self, name: str, fn: Callable[[], Awaitable[str]], timeout: float = CHECK_TIMEOUT) -> bool:
        start = time.monotonic()
        try:
            detail = await asyncio.wait_for(fn(), timeout)
            ok = True
        except asyncio.TimeoutError:
            ok, detail = False, f"timed out after {timeout} s"
        except Exception as e:  # a failed check is reported, never raised
            ok, detail = False, f"{type(e).__name__}: {e}"
        ms = round((time.monotonic() - start) * 1000, 1)
        emit(check=name, ok=ok, ms=ms, detail=str(detail))
        if ok:
            self.passed += 1
        else:
            self.failed += 1
        return ok

    def skip(self, name: str, why: str) -> None:
        emit(check=name, ok=False, ms=0.0, detail=f"not run: {why}")
        self.failed += 1

    def summary(self) -> int:
        emit(summary="pass" if self.failed == 0 else "fail", passed=self.passed, failed=self.failed)
        return 0 if self.failed == 0 else 1


def expect_equal(sent: bytes, got: bytes) -> str:
    if sent == got:
        return f"{len(got)} bytes echoed intact"
    for i, (a, b) in enumerate(zip(sent, got)):
        if a != b:
            raise AssertionError(f"echo differs at byte {i} (sent {len(sent)}, got {len(got)})")
    raise AssertionError(f"sent {len(sent)} bytes, got {len(got)}")


def expect_close(code: Any, reason: Any, want_code: int, want_reason: str) -> str:
    if code != want_code or reason != want_reason:
        raise AssertionError(f"closed with code {code!r} reason {reason!r}, want {want_code} {want_reason!r}")
    return f"closed with code {code} reason {reason!r}"


def client_args(argv: list[str]) -> tuple[str, str]:
    """`BASE_URL MODE`: MODE `routes` runs the interop route server's checks, `echo` only
    what an echo server (`wt serve`) answers."""
    if len(argv) != 3 or argv[2] not in ("routes", "echo"):
        sys.stderr.write(f"usage: {argv[0]} https://127.0.0.1:PORT routes|echo\n")
        sys.exit(2)
    return argv[1].rstrip("/"), argv[2]


def server_args(argv: list[str]) -> tuple[str, str]:
    """`CERT_PEM KEY_PEM`."""
    if len(argv) != 3:
        sys.stderr.write(f"usage: {argv[0]} CERT_PEM KEY_PEM\n")
        sys.exit(2)
    return argv[1], argv[2]
