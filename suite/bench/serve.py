"""``suite bench serve``: a soak test of ``suite serve`` under idle, active and vanishing clients.

The server runs in a child process as ``suite serve`` runs it (the package loaded the same way,
its default streaming context, the same process settings, a free port on 127.0.0.1 only), with
a short idle timeout so that idle clients are closed and come back many times. This process is
the clients, all on one event loop, for ``warmup + seconds`` seconds:

- ``idle`` clients connect and never send; closed for idleness (1008), each connects again at
  once, and closed to make room for a newer connection (1013, "try again later"), a second later
  (at once, each eviction would evict another idle client: see BENCHMARKS.md);
- ``active`` clients each stream a sentence synthesized with espeak-ng in real time as 0.1 s
  int16 frames, send ``end``, read the final text, and connect again for the next sentence (a
  1013 refusal is counted, and the same sentence is tried again a second later);
- ``drops`` more clients stream a random 20-80% of a sentence in real time and vanish without
  a close frame (the socket is reset), then connect again.

When the time is up no new sentence starts; the sentences under way finish, then every client
leaves and the server is asked how many streams are still open. Measured: finals received, and
how many equal the offline transcript of the same int16 audio (``Transcriber.transcribe`` with
the encoder set to the served context, computed once per sentence); busy refusals of active
clients; other endings of an active stream (none are expected; a final that takes over
``FINAL_TIMEOUT`` counts as one); streams left open; the server's RSS at the start of the
measured load and at its end, each the median of the readings (one a second) over
``RSS_WINDOW`` seconds, since one reading swings by a fifth with what the step under way holds;
its growth, end over start; its floor after each of those windows (RSS right after the server
was asked to hand its free heap pages back, ``malloc_trim``: what it really keeps, which a leak
would raise); and p50 / p95 latency of the final text after the last frame (``end`` is sent
with it). The baseline is taken after ``warmup`` seconds of the same load (the model loaded,
every kind of client connected, the first sentences finished, idle clients timed out), so the
growth is what the server gains while it goes on serving, not what starting costs. The JSON
adds every reading of RSS and of the heap in use.

The child answers each line on its stdin with one JSON line of its figures and exits when stdin
closes, so it cannot outlive the benchmark.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import ctypes
import ctypes.util
import json
import os
import random
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np

from suite.bench import print_header, report

SECONDS, WARMUP = 60.0, 10.0  # measured load, and load before the first RSS reading
IDLE, ACTIVE, DROPS = 64, 20, 4  # clients of each kind
SENTENCES = 8  # distinct espeak-ng sentences the active clients cycle through
IDLE_TIMEOUT = 5.0  # the server's, short so that idle clients are closed many times
PACKAGE = "streaming-asr"
FRAME_SECONDS = 0.1
SAMPLE_RATE = 16000
STATS_EVERY = 1.0  # seconds between RSS readings during the load
RSS_WINDOW = 10.0  # RSS at the start and the end: the median reading of this many seconds
FINAL_TIMEOUT = 60.0  # the most an active client waits for its final text
RETRY_SECONDS = 1.0  # a client closed with 1013 ("try again later") waits this long


@dataclass
class _Tally:
    """What the clients saw, updated on the one event loop."""

    finals: int = 0
    correct: int = 0
    wrong: list[dict] = field(default_factory=list)  # the first few {"expected", "got"}
    busy: int = 0  # refusals of active clients: all streams taken
    evicted: int = 0  # ... and closes of active clients to make room for a newer connection
    failures: list[str] = field(default_factory=list)  # endings of an active stream but a final
    latencies: list[float] = field(default_factory=list)
    drops: int = 0
    idle_timeouts: int = 0
    idle_evictions: int = 0
    idle_other: int = 0


# --- the server process ---------------------------------------------------------------------


class _MallInfo2(ctypes.Structure):
    """glibc's ``struct mallinfo2`` (malloc.h), summed over all arenas."""

    _fields_ = [
        (name, ctypes.c_size_t)
        for name in "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost"
        .split()
    ]  # fmt: skip


def _memory() -> dict:
    """This process's resident set now and at its peak (Linux ``/proc``), the blocks Python's
    small-object allocator holds and, on glibc, the heap in use and free (what tells live memory
    from freed memory that malloc keeps), in MB."""
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
    kb = {name: int(fields[name].split()[0]) for name in ("VmRSS", "VmHWM")}
    out = {"rss_mb": kb["VmRSS"] / 1024, "peak_rss_mb": kb["VmHWM"] / 1024}
    out["python_blocks"] = sys.getallocatedblocks()  # Python's own allocator: objects alive
    try:
        mallinfo2 = ctypes.CDLL(ctypes.util.find_library("c")).mallinfo2
    except (OSError, AttributeError, TypeError):  # not glibc 2.33 or later
        return out
    mallinfo2.restype = _MallInfo2
    info = mallinfo2()
    out["heap_in_use_mb"] = (info.uordblks + info.hblkhd) / 2**20  # mmapped blocks are in use
    out["heap_free_mb"] = info.fordblks / 2**20
    return out


def _server(package: str, idle_timeout: float) -> None:
    """Serve ``package`` on 127.0.0.1 (a free port); answer each stdin line with its figures."""
    import torch

    from suite.model import load_package, resolve
    from suite.serve import StreamServer, configure_serving_process, run_server
    from suite.tasks.asr.pipeline import default_stream_context

    configure_serving_process()  # as `suite serve` does
    model = load_package(resolve(package), task="asr")  # as `suite serve` loads it
    context = default_stream_context(model)
    server = StreamServer(model, att_context=context, idle_timeout=idle_timeout)

    async def main() -> None:
        async with run_server(server, "127.0.0.1", 0) as url:
            first = {"url": url, "att_context": list(context), "threads": torch.get_num_threads()}
            print(json.dumps(first), flush=True)
            loop = asyncio.get_running_loop()
            while line := await loop.run_in_executor(None, sys.stdin.readline):
                if line.strip() == "trim":  # hand free heap pages back first: the floor
                    with contextlib.suppress(OSError, AttributeError, TypeError):
                        ctypes.CDLL(ctypes.util.find_library("c")).malloc_trim(0)
                print(json.dumps({**_memory(), "streams": len(server.batcher.streams)}))
                sys.stdout.flush()

    asyncio.run(main())


class _Server:
    """The child process running the server, and the line protocol to ask for its figures."""

    def __init__(self, proc: asyncio.subprocess.Process, log: Path, info: dict) -> None:
        self.proc, self.log, self.info = proc, log, info

    @classmethod
    async def start(cls, package: Path, idle_timeout: float, log: Path) -> _Server:
        command = ["-m", "suite.bench.serve", "--server", str(package)]
        with log.open("wb") as err:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                *command,
                "--idle-timeout",
                str(idle_timeout),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=err,
            )
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), timeout=180)
        if not line.startswith(b"{"):
            proc.kill()
            raise RuntimeError(f"the server did not start:\n{log.read_text()[-3000:]}")
        return cls(proc, log, json.loads(line))

    async def stats(self, trim: bool = False) -> dict:
        """The server's figures; with ``trim``, after it returned its free heap pages."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(b"trim\n" if trim else b"\n")
        await self.proc.stdin.drain()
        return json.loads(await asyncio.wait_for(self.proc.stdout.readline(), timeout=30))

    async def stop(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()  # its signal to stop
        try:
            await asyncio.wait_for(self.proc.wait(), timeout=30)
        except asyncio.TimeoutError:
            self.proc.kill()
            await self.proc.wait()


# --- the clients ----------------------------------------------------------------------------


async def _until(moment: float) -> None:
    await asyncio.sleep(max(0.0, moment - time.monotonic()))


async def _read_to_close(ws) -> tuple[int | None, list[dict], float | None]:
    """The text messages up to the server's close frame, its close code, and when a final came."""
    import aiohttp

    messages, final_at = [], None
    while True:
        message = await ws.receive()
        if message.type == aiohttp.WSMsgType.TEXT:
            messages.append(message.json())
            if messages[-1].get("type") == "final":
                final_at = time.monotonic()
        elif message.type == aiohttp.WSMsgType.CLOSE:
            return message.data, messages, final_at
        elif message.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
            return ws.close_code, messages, final_at


async def _sentence(http, url: str, pcm: np.ndarray, expected: str, tally: _Tally) -> bool:
    """Stream one sentence in real time and score its final; ``False`` when refused as busy."""
    frame = int(FRAME_SECONDS * SAMPLE_RATE)
    async with http.ws_connect(url + "ws") as ws:
        reader = asyncio.create_task(_read_to_close(ws))
        begin = time.monotonic()
        with contextlib.suppress(ConnectionError, RuntimeError):  # closed under us: see reader
            for index, start in enumerate(range(0, len(pcm), frame)):
                await _until(begin + (index + 1) * FRAME_SECONDS)  # the frame has been "spoken"
                if reader.done():
                    break
                await ws.send_bytes(pcm[start : start + frame].tobytes())
            if not reader.done():
                await ws.send_json({"type": "end"})
        sent = time.monotonic()
        try:
            code, messages, final_at = await asyncio.wait_for(reader, timeout=FINAL_TIMEOUT)
        except asyncio.TimeoutError:  # counted, so that one late final does not end the run
            tally.failures.append(f"no final within {FINAL_TIMEOUT:g} s of the last frame")
            return True
    errors = [m.get("message", "") for m in messages if m.get("type") == "error"]
    if code == 1013:
        if any("to make room" in e for e in errors):
            tally.evicted += 1
        else:
            tally.busy += 1
        return False
    final = [m["text"] for m in messages if m.get("type") == "final"]
    if code != 1000 or not final or final_at is None:
        tally.failures.append(f"closed with {code}: {errors[-1] if errors else 'no message'}")
        return True
    tally.finals += 1
    tally.latencies.append(final_at - sent)
    if final[0] == expected:
        tally.correct += 1
    elif len(tally.wrong) < 5:
        tally.wrong.append({"expected": expected, "got": final[0]})
    return True


async def _active(http, url, sentences, first: int, stop: float, tally: _Tally) -> None:
    index = first
    while time.monotonic() < stop:
        pcm, expected = sentences[index % len(sentences)]
        if await _sentence(http, url, pcm, expected, tally):
            index += 1
        else:
            await asyncio.sleep(RETRY_SECONDS)


async def _idle(http, url: str, delay: float, done: asyncio.Event, tally: _Tally) -> None:
    """Stay connected without sending until ``done``, connecting again whenever closed."""
    await asyncio.sleep(delay)  # spread the first connections over one idle timeout
    while not done.is_set():
        async with http.ws_connect(url + "ws") as ws:
            reader = asyncio.create_task(_read_to_close(ws))
            finished = asyncio.create_task(done.wait())
            await asyncio.wait({reader, finished}, return_when=asyncio.FIRST_COMPLETED)
            finished.cancel()
            if not reader.done():  # the run is over: leave politely
                await ws.close()
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(reader, timeout=5)
                return
            code = reader.result()[0]
        if code == 1008:
            tally.idle_timeouts += 1
        elif code == 1013:  # "try again later": at once, every eviction would evict another
            tally.idle_evictions += 1
            await asyncio.sleep(RETRY_SECONDS)
        else:
            tally.idle_other += 1
            await asyncio.sleep(RETRY_SECONDS)


def _masked_frame(opcode: int, payload: bytes) -> bytes:
    """One final client frame, masked as RFC 6455 requires; payload under 64 KiB."""
    size = len(payload)
    header = bytes([0x80 | opcode])
    header += bytes([0x80 | size]) if size < 126 else bytes([0xFE]) + size.to_bytes(2, "big")
    mask = os.urandom(4)
    data = np.frombuffer(payload, np.uint8) ^ np.resize(np.frombuffer(mask, np.uint8), size)
    return header + mask + data.tobytes()


async def _vanish_once(url: str, pcm: np.ndarray, fraction: float) -> None:
    """Stream the first ``fraction`` of ``pcm`` in real time, then reset the connection."""
    u = urlsplit(url)
    reader, writer = await asyncio.open_connection(u.hostname, u.port)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        f"GET /ws HTTP/1.1\r\nHost: {u.netloc}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=30)
    frame = int(FRAME_SECONDS * SAMPLE_RATE)
    begin = time.monotonic()
    for index, start in enumerate(range(0, int(len(pcm) * fraction), frame)):
        await _until(begin + (index + 1) * FRAME_SECONDS)
        if writer.transport.is_closing():  # the server closed it first (e.g. to make room)
            break
        writer.write(_masked_frame(0x2, pcm[start : start + frame].tobytes()))
    writer.transport.abort()  # no close frame: the network went away


async def _dropping(url: str, sentences, seed: int, stop: float, tally: _Tally) -> None:
    rng = random.Random(seed)
    while time.monotonic() < stop:
        pcm, _ = sentences[rng.randrange(len(sentences))]
        await _vanish_once(url, pcm, rng.uniform(0.2, 0.8))
        tally.drops += 1


# --- the run --------------------------------------------------------------------------------


def _sentences(package: Path, count: int) -> tuple[list[tuple[np.ndarray, str]], list[int]]:
    """``count`` espeak-ng sentences as int16 audio, each with the offline transcript the served
    context gives; and that context."""
    from suite.demo import demo_utterances
    from suite.model import load_package
    from suite.tasks.asr import Transcriber
    from suite.tasks.asr.pipeline import default_stream_context

    pcms = []
    for _text, audio, _voice, _seen in demo_utterances(count):
        pcms.append(np.clip(np.round(audio * 32767), -32768, 32767).astype("<i2"))
    model = load_package(package, task="asr")
    context = default_stream_context(model)
    model.encoder.att_context = tuple(context)  # offline with the context the server streams
    floats = [pcm.astype(np.float32) / 32768 for pcm in pcms]  # what the server decodes
    expected = Transcriber(model).transcribe(floats, sample_rate=SAMPLE_RATE)
    return list(zip(pcms, expected, strict=True)), list(context)


async def _soak(
    package: Path,
    sentences: list[tuple[np.ndarray, str]],
    seconds: float,
    warmup: float,
    idle: int,
    active: int,
    drops: int,
    idle_timeout: float,
    log: Path,
) -> dict:
    import aiohttp

    server = await _Server.start(package, idle_timeout, log)
    tally = _Tally()
    try:
        url = server.info["url"]
        connector = aiohttp.TCPConnector(limit=0)  # one socket per client, however many
        async with aiohttp.ClientSession(connector=connector) as http:
            begin = time.monotonic()
            stop = begin + warmup + seconds
            done = asyncio.Event()
            spread = idle_timeout / max(idle, 1)
            idlers = [
                asyncio.create_task(_idle(http, url, k * spread, done, tally)) for k in range(idle)
            ]
            loaded = [
                asyncio.create_task(_active(http, url, sentences, k, stop, tally))
                for k in range(active)
            ]
            loaded += [
                asyncio.create_task(_dropping(url, sentences, k, stop, tally)) for k in range(drops)
            ]
            await _until(begin + warmup)
            window = min(RSS_WINDOW, seconds / 3)
            trace = []  # (seconds into the measured load, the server's figures)
            floors = []  # its RSS after handing free heap pages back: after each RSS window
            while (now := time.monotonic()) <= stop:
                trace.append((now - begin - warmup, await server.stats()))
                if not floors and trace[-1][0] >= window:
                    floors.append(await server.stats(trim=True))
                await _until(min(now + STATS_EVERY, stop + 0.5 * STATS_EVERY))
            floors.append(await server.stats(trim=True))
            await asyncio.gather(*loaded)  # the sentences under way finish
            drained = time.monotonic() - stop
            done.set()
            await asyncio.gather(*idlers)
            for _ in range(100):  # the server notices the last departures, then frees them
                after = await server.stats()
                if after["streams"] == 0:
                    break
                await asyncio.sleep(0.1)
    finally:
        await server.stop()
    start_mb = statistics.median(x["rss_mb"] for t, x in trace if t <= window)
    end_mb = statistics.median(x["rss_mb"] for t, x in trace if t >= seconds - window)
    ms = sorted(1000 * x for x in tally.latencies)
    counts = asdict(tally)
    del counts["latencies"], counts["failures"], counts["wrong"], counts["busy"], counts["evicted"]
    return {
        "package": str(package),
        "att_context": server.info["att_context"],
        "threads": server.info["threads"],
        "seconds": seconds,
        "warmup_s": warmup,
        "drain_s": drained,
        "idle_clients": idle,
        "active_clients": active,
        "drop_clients": drops,
        "idle_timeout_s": idle_timeout,
        "sentences": len(sentences),
        "sentence_seconds": [len(pcm) / SAMPLE_RATE for pcm, _ in sentences],
        **counts,
        "busy_refusals": tally.busy + tally.evicted,
        "busy_all_streams_taken": tally.busy,
        "busy_closed_to_make_room": tally.evicted,
        "failures": len(tally.failures),
        "failure_examples": tally.failures[:5],
        "wrong_examples": tally.wrong,
        "streams_open_end": after["streams"],
        "rss_start_mb": start_mb,
        "rss_end_mb": end_mb,
        "rss_growth_pct": 100 * (end_mb - start_mb) / start_mb,
        "rss_peak_mb": after["peak_rss_mb"],
        "rss_window_s": window,
        "rss_floor_start_mb": floors[0]["rss_mb"],
        "rss_floor_end_mb": floors[-1]["rss_mb"],
        "rss_floor_growth_pct": 100 * (floors[-1]["rss_mb"] / floors[0]["rss_mb"] - 1),
        "python_blocks_start": floors[0]["python_blocks"],
        "python_blocks_end": floors[-1]["python_blocks"],
        "rss_min_mb": min(x["rss_mb"] for _, x in trace),
        "rss_max_mb": max(x["rss_mb"] for _, x in trace),
        "rss_trace_mb": [round(x["rss_mb"]) for _, x in trace],
        "heap_in_use_trace_mb": [round(x.get("heap_in_use_mb", 0)) for _, x in trace],
        "latency_p50_ms": statistics.median(ms) if ms else None,
        "latency_p95_ms": ms[min(len(ms) - 1, int(0.95 * len(ms)))] if ms else None,
    }


def measure(
    seconds: float = SECONDS,
    warmup: float = WARMUP,
    idle: int = IDLE,
    active: int = ACTIVE,
    drops: int = DROPS,
    sentences: int = SENTENCES,
    idle_timeout: float = IDLE_TIMEOUT,
    package: str | Path = PACKAGE,
) -> dict:
    """Run the soak test (see the module docstring) and return its figures."""
    from suite.model import resolve

    path = resolve(package)
    audio, context = _sentences(path, sentences)
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "server.log"
        run = _soak(path, audio, seconds, warmup, idle, active, drops, idle_timeout, log)
        limit = warmup + seconds + FINAL_TIMEOUT + 240  # bounded, whatever happens
        result = asyncio.run(asyncio.wait_for(run, timeout=limit))
    assert result["att_context"] == context  # the expected texts are for the served context
    return result


def _markdown(r: dict) -> None:
    print_header("Serving under load", "serve", r["threads"])
    print(
        f"\n`{Path(r['package']).name}`, context {r['att_context']}, idle timeout "
        f"{r['idle_timeout_s']:g} s; {r['idle_clients']} idle, {r['active_clients']} active and "
        f"{r['drop_clients']} vanishing clients for {r['warmup_s']:g} s of warm-up + "
        f"{r['seconds']:g} s, {r['sentences']} sentences "
        f"({min(r['sentence_seconds']):.1f}-{max(r['sentence_seconds']):.1f} s). RSS start "
        f"and end: medians of the first and last {r['rss_window_s']:g} s of readings; "
        "floor: right after handing free heap pages back.\n"
    )
    print(
        "| finals | equal to offline | busy refusals | other endings | drops | "
        "idle closed: timeout / to make room | streams open at end | RSS start / end (MB) | "
        "RSS growth | RSS range (MB) | RSS floor start / end (MB) | floor growth | "
        "final latency p50 / p95 (ms) |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    latency = (
        f"{r['latency_p50_ms']:.0f} / {r['latency_p95_ms']:.0f}" if r["latency_p50_ms"] else "-"
    )
    print(
        f"| {r['finals']} | {r['correct']} | {r['busy_refusals']} | {r['failures']} | "
        f"{r['drops']} | {r['idle_timeouts']} / {r['idle_evictions']} | "
        f"{r['streams_open_end']} | {r['rss_start_mb']:.0f} / {r['rss_end_mb']:.0f} | "
        f"{r['rss_growth_pct']:+.1f}% | {r['rss_min_mb']:.0f}-{r['rss_max_mb']:.0f} | "
        f"{r['rss_floor_start_mb']:.0f} / {r['rss_floor_end_mb']:.0f} | "
        f"{r['rss_floor_growth_pct']:+.1f}% | {latency} |"
    )


def main(json_output: bool = False, **options) -> None:
    report(measure(**options), json_output, _markdown)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--server", required=True, help="the package folder to serve")
    parser.add_argument("--idle-timeout", type=float, default=IDLE_TIMEOUT)
    a = parser.parse_args()
    _server(a.server, a.idle_timeout)
