"""The `wt bench` scenarios through pywebtransport (0.8.1 or the newest), client and server
both pywebtransport, the server in a child process as in `wt bench`'s sessions scenario.

usage: pwt_bench.py [--quick] [--scenario a,b]        (the client; prints JSON lines)
       pwt_bench.py --server PORT                     (the server; internal)

The certificate comes from the environment (WT_BENCH_CERT_PEM / WT_BENCH_KEY_PEM), as
peer-bench hands it to its child servers. The server protocol is that of
crates/webtransport-cli/src/bench/scenarios.rs: each bidirectional stream's first byte says
what to do (U: count to the end and answer the count; E: echo; D: answer the datagrams
counted since the last D; M: answer VmRSS in bytes). Sizes are smaller than the Rust ones
(Python is one thread per process): the rates are what count.

Standard library and pywebtransport only: the newest pywebtransport's environment has
nothing else installed.
"""

from __future__ import annotations

import asyncio
import json
import os
import ssl
import sys
import tempfile
import time

import pywebtransport

V081 = pywebtransport.__version__.startswith("0.8.")
IMPL = f"pywebtransport-{pywebtransport.__version__}"

FULL = dict(throughput=64 << 20, streams=1000, stream_size=16 << 10, in_flight=64, requests=1000,
            datagram_time=2.0, datagram_size=1000, handshakes=100, concurrency=32, sessions=300)
QUICK = dict(FULL, throughput=8 << 20, streams=200, requests=200, datagram_time=1.0, handshakes=20,
             sessions=50)
SCENARIOS = ["throughput", "streams", "latency", "datagrams", "handshakes", "sessions"]
SCENARIO_TIMEOUT = 300.0
WRITE_SIZE = 64 * 1024
LATENCY_WARMUP = 20


def emit(scenario: str, metric: str, value: float, unit: str, higher: bool = True) -> None:
    line = dict(scenario=scenario, impl=IMPL, metric=metric, value=round(value, 3), unit=unit,
                higher_is_better=higher)
    sys.stdout.write(json.dumps(line) + "\n")
    sys.stdout.flush()


def cert_files() -> tuple[str, str]:
    cert, key = os.environ.get("WT_BENCH_CERT_PEM"), os.environ.get("WT_BENCH_KEY_PEM")
    if not cert or not key:
        sys.exit("pwt_bench.py: WT_BENCH_CERT_PEM and WT_BENCH_KEY_PEM must hold the certificate")
    d = tempfile.mkdtemp(prefix="pwt-bench-")
    paths = (os.path.join(d, "cert.pem"), os.path.join(d, "key.pem"))
    for path, text in zip(paths, (cert, key)):
        with open(path, "w") as f:
            f.write(text)
    return paths


def resident_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


# ---- the two APIs ------------------------------------------------------------------------

# Both versions cap connections per client and per server (at 100 by default), which the
# handshake and sessions scenarios go past.
LIMITS = dict(initial_max_data=64 << 20, initial_max_streams_bidi=1000, initial_max_streams_uni=100,
              max_connections=100_000)


async def read(stream) -> bytes:
    return await (stream.read(size=65536) if V081 else stream.read(max_size=65536))


async def write(stream, data: bytes, end: bool = False) -> None:
    await stream.write(data=data, end_stream=end)


async def read_to_end(stream) -> bytes:
    out = bytearray()
    while True:
        chunk = await read(stream)
        if not chunk:
            return bytes(out)
        out += chunk


class Datagrams:
    def __init__(self, session) -> None:
        self.session = session
        self.transport = None

    async def open(self) -> "Datagrams":
        if V081:
            self.transport = await self.session.create_datagram_transport()
        return self

    async def send(self, data: bytes) -> None:
        if V081:
            await self.transport.send(data=data)
        else:
            await self.session.send_datagram(data=data)

    async def receive(self) -> bytes:
        return await (self.transport.receive() if V081 else self.session.read_datagram())


async def close_connection(session) -> None:
    if V081:
        await session.close(close_connection=True)
    else:
        await session.connection.close()


def client_config():
    kw = dict(verify_mode=ssl.CERT_NONE, connect_timeout=30.0, read_timeout=60.0, **LIMITS)
    if V081:
        # 0.8.1 also counts the streams a session has open against max_streams (default 100).
        kw.update(max_datagram_size=65535, write_timeout=60.0, stream_creation_timeout=30.0,
                  max_streams=1_000_000, max_incoming_streams=1_000_000)
    else:
        kw.update(stream_create_timeout=30.0)
    return pywebtransport.ClientConfig(**kw)


# ---- server --------------------------------------------------------------------------------

async def serve_stream(stream, counter: list) -> None:
    try:
        first = await read(stream)
        if not first:
            return
        cmd, rest = first[0:1], first[1:]
        if cmd == b"U":
            n = len(rest)
            while True:
                chunk = await read(stream)
                if not chunk:
                    break
                n += len(chunk)
            await write(stream, n.to_bytes(8, "little"), end=True)
        elif cmd == b"E":
            if rest:
                await write(stream, rest)
            while True:
                chunk = await read(stream)
                if not chunk:
                    break
                await write(stream, chunk)
            await write(stream, b"", end=True)
        elif cmd == b"D":
            n, counter[0] = counter[0], 0
            await write(stream, n.to_bytes(8, "little"), end=True)
        elif cmd == b"M":
            await write(stream, resident_bytes().to_bytes(8, "little"), end=True)
    except Exception as e:  # one stream's failure is the client's to report
        sys.stderr.write(f"server stream: {type(e).__name__}: {e}\n")


async def serve_session(session, tasks: set) -> None:
    counter = [0]
    dgrams = await Datagrams(session).open()

    async def count() -> None:
        while True:
            try:
                await dgrams.receive()
            except Exception:
                return
            counter[0] += 1

    def spawn(coro) -> None:
        t = asyncio.create_task(coro)
        tasks.add(t)
        t.add_done_callback(tasks.discard)

    spawn(count())
    if V081:
        async for stream in session.incoming_streams():
            if isinstance(stream, pywebtransport.WebTransportStream):
                spawn(serve_stream(stream, counter))
    else:
        async for stream in session.incoming_bidirectional_streams():
            spawn(serve_stream(stream, counter))


async def server_main(port: int) -> None:
    cert, key = cert_files()
    tasks: set = set()
    kw = dict(bind_host="127.0.0.1", bind_port=port, certfile=cert, keyfile=key, **LIMITS)
    if V081:
        app = pywebtransport.ServerApp(config=pywebtransport.ServerConfig(
            max_datagram_size=65535, read_timeout=60.0, write_timeout=60.0, max_sessions=100000,
            max_streams_per_connection=1_000_000,
            max_incoming_streams=1_000_000, **kw))

        @app.route(path="/bench")
        async def bench(session) -> None:
            await serve_session(session, tasks)

        async with app:
            await app.server.listen(host="127.0.0.1", port=port)
            print(json.dumps({"port": port}), flush=True)
            await app.server.serve_forever()
    else:
        config = pywebtransport.ServerConfig(**kw)
        async with pywebtransport.WebTransportServer(config=config) as server:
            await server.listen()
            print(json.dumps({"port": port}), flush=True)

            async def on_session(session) -> None:
                await session.accept()
                await serve_session(session, tasks)

            async def on_connection(connection) -> None:
                async for session in connection.incoming_sessions():
                    t = asyncio.create_task(on_session(session))
                    tasks.add(t)
                    t.add_done_callback(tasks.discard)

            async for connection in server.incoming_connections():
                t = asyncio.create_task(on_connection(connection))
                tasks.add(t)
                t.add_done_callback(tasks.discard)


# ---- client --------------------------------------------------------------------------------

def free_udp_port() -> int:
    import socket
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def start_server():
    port = free_udp_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, os.path.abspath(__file__), "--server", str(port),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
    line = await asyncio.wait_for(proc.stdout.readline(), 30)
    if not line:
        raise RuntimeError("the server did not start")
    return proc, f"https://127.0.0.1:{port}/bench"


async def stop_server(proc) -> None:
    proc.kill()
    await proc.wait()


async def query(session, cmd: bytes) -> int:
    stream = await session.create_bidirectional_stream()
    await write(stream, cmd, end=True)
    return int.from_bytes(await read_to_end(stream), "little")


async def throughput(client, url, s) -> None:
    session = await client.connect(url=url)
    chunk = b"\x5a" * WRITE_SIZE
    start = time.perf_counter()
    stream = await session.create_bidirectional_stream()
    await write(stream, b"U")
    left = s["throughput"]
    while left > 0:
        n = min(left, WRITE_SIZE)
        await write(stream, chunk[:n])
        left -= n
    await write(stream, b"", end=True)
    got = int.from_bytes(await read_to_end(stream), "little")
    elapsed = time.perf_counter() - start
    if got != s["throughput"]:
        raise RuntimeError(f"server received {got} of {s['throughput']}")
    emit("throughput", "goodput", got * 8 / elapsed / 1e9, "Gbit/s")
    await close_connection(session)


async def streams(client, url, s) -> None:
    session = await client.connect(url=url)
    body = b"U" + b"\x5a" * s["stream_size"]
    count = s["streams"]
    next_id = [0]

    async def worker() -> None:
        while next_id[0] < count:
            next_id[0] += 1
            stream = await session.create_bidirectional_stream()
            await write(stream, body, end=True)
            answer = await read_to_end(stream)
            if int.from_bytes(answer, "little") != s["stream_size"]:
                raise RuntimeError("short stream")

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(s["in_flight"])))
    elapsed = time.perf_counter() - start
    emit("streams", "streams_per_s", count / elapsed, "streams/s")
    emit("streams", "goodput", count * s["stream_size"] * 8 / elapsed / 1e9, "Gbit/s")
    await close_connection(session)


def percentiles(samples: list, prefix: str) -> None:
    samples.sort()
    for name, q in (("p50", 0.5), ("p99", 0.99), ("p999", 0.999)):
        i = min(len(samples) - 1, int(q * len(samples)))
        emit("latency", f"{prefix}_{name}", samples[i] * 1e6, "us", higher=False)


async def latency(client, url, s) -> None:
    session = await client.connect(url=url)
    message = b"\x5a" * 64
    same = []
    stream = await session.create_bidirectional_stream()
    await write(stream, b"E")
    for i in range(LATENCY_WARMUP + s["requests"]):
        start = time.perf_counter()
        await write(stream, message)
        got = 0
        while got < 64:
            chunk = await read(stream)
            if not chunk:
                raise RuntimeError("echo stream ended")
            got += len(chunk)
        if i >= LATENCY_WARMUP:
            same.append(time.perf_counter() - start)
    await write(stream, b"", end=True)
    new = []
    for i in range(LATENCY_WARMUP + s["requests"]):
        start = time.perf_counter()
        stream = await session.create_bidirectional_stream()
        await write(stream, b"E" + message, end=True)
        if len(await read_to_end(stream)) != 64:
            raise RuntimeError("short echo")
        if i >= LATENCY_WARMUP:
            new.append(time.perf_counter() - start)
    percentiles(same, "same_stream")
    percentiles(new, "new_stream")
    await close_connection(session)


async def datagrams(client, url, s) -> None:
    session = await client.connect(url=url)
    dgrams = await Datagrams(session).open()
    await query(session, b"D")
    payload = b"\x5a" * s["datagram_size"]
    sent = 0
    start = time.perf_counter()
    while time.perf_counter() - start < s["datagram_time"]:
        for _ in range(32):
            try:
                await dgrams.send(payload)
                sent += 1
            except Exception:
                pass
        await asyncio.sleep(0)
    elapsed = time.perf_counter() - start
    await asyncio.sleep(0.3)
    received = await query(session, b"D")
    emit("datagrams", "sent_per_s", sent / elapsed, "datagrams/s")
    emit("datagrams", "received_per_s", received / elapsed, "datagrams/s")
    emit("datagrams", "delivered", received * 100 / sent if sent else 0.0, "%")
    await close_connection(session)


async def handshakes(client, url, s) -> None:
    n = s["handshakes"]
    start = time.perf_counter()
    for _ in range(n):
        await close_connection(await client.connect(url=url))
    emit("handshakes", "sequential_per_s", n / (time.perf_counter() - start), "handshakes/s")
    left = [n]

    async def worker() -> None:
        while left[0] > 0:
            left[0] -= 1
            await close_connection(await client.connect(url=url))

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(s["concurrency"])))
    emit("handshakes", f"concurrent{s['concurrency']}_per_s", n / (time.perf_counter() - start),
         "handshakes/s")


async def sessions(client, url, s) -> None:
    probe = await client.connect(url=url)
    warm = [await client.connect(url=url) for _ in range(min(20, s["sessions"]))]
    for w in warm:
        await close_connection(w)
    await asyncio.sleep(0.3)
    before = await query(probe, b"M")
    held = []
    left = [s["sessions"]]

    async def worker() -> None:
        while left[0] > 0:
            left[0] -= 1
            held.append(await client.connect(url=url))

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(s["concurrency"])))
    opened = time.perf_counter() - start
    await asyncio.sleep(0.5)
    after = await query(probe, b"M")
    emit("sessions", "rss_per_session", max(0, after - before) / s["sessions"], "B", higher=False)
    emit("sessions", "opened_per_s", s["sessions"] / opened, "sessions/s")
    for h in held:
        try:
            await close_connection(h)
        except Exception:
            pass


async def client_main(quick: bool, scenarios: list) -> int:
    s = QUICK if quick else FULL
    funcs = dict(throughput=throughput, streams=streams, latency=latency, datagrams=datagrams,
                 handshakes=handshakes, sessions=sessions)
    failed = 0
    for name in scenarios:
        proc, url = await start_server()
        try:
            async with pywebtransport.WebTransportClient(config=client_config()) as client:
                await asyncio.wait_for(funcs[name](client, url, s), SCENARIO_TIMEOUT)
        except Exception as e:
            sys.stderr.write(f"{IMPL}: {name} failed: {type(e).__name__}: {e}\n")
            failed += 1
        finally:
            await stop_server(proc)
    return 1 if failed else 0


def main() -> int:
    args = sys.argv[1:]
    if args[:1] == ["--server"]:
        asyncio.run(server_main(int(args[1])))
        return 0
    quick = "--quick" in args
    scenarios = SCENARIOS
    if "--scenario" in args:
        wanted = args[args.index("--scenario") + 1].split(",")
        scenarios = [x for x in SCENARIOS if x in wanted]
    return asyncio.run(client_main(quick, scenarios))


if __name__ == "__main__":
    sys.exit(main())
