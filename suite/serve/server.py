"""The HTTP + WebSocket server behind ``suite serve`` (aiohttp).

Protocol, one WebSocket at ``/ws`` per stream:

client -> server
    binary frames: little-endian int16 mono PCM at the model's rate (16 kHz), any whole number
        of samples up to ``max_message_seconds`` of audio per frame (1 s = 32,000 bytes).
    ``{"type": "end"}`` (text): no more audio; the server answers with the final text.

server -> client (text, JSON)
    ``{"type": "ready", "sample_rate": 16000, "max_message_bytes": 32000}`` on connect.
    ``{"type": "partial", "text": "..."}`` whenever the text so far changes.
    ``{"type": "final", "text": "..."}`` after ``end``; then the server closes (code 1000).
    ``{"type": "error", "message": "..."}`` a frame was refused (odd byte count, text that is
        not ``end``, audio after ``end``); the frame is dropped and the stream goes on.

A frame over the cap closes that connection (1009, with the reason), and so does a client whose
unprocessed audio grows past ``max_backlog_seconds`` (1008). Whatever one client does, and
however it leaves, ends only its own stream.

Idle clients: a client that sends nothing for ``idle_timeout`` seconds (before its first audio,
or between frames; not while it waits for its final text) gets an ``error`` message naming the
timeout and is closed (1008, "idle timeout"). Only clients that have sent audio (or ``end``)
hold one of the ``max_streams`` streams; a client whose first audio finds them all taken is
closed with 1013 ("server busy"). Connected clients that have sent nothing yet wait in a pool of
``max_waiting``; when it is full, a new connection closes the one that has waited longest
(1013), so idle connections can neither take the streams of active clients nor keep new ones
out.

Concurrency: the event loop only receives, checks and queues audio. One background task owns
the :class:`~suite.streaming.StreamBatcher`: it hands the queued audio of every client to it and
runs :meth:`~suite.streaming.StreamBatcher.step` for all of them at once in a worker thread, so
receiving never waits for the model and the batcher is only ever touched by one task.

Memory: glibc's malloc keeps the heap pages that a step's tensors free, and a server behind real
time runs bigger steps, so its RSS would ratchet up to its largest burst and stay there (under
``suite bench serve``, +11% to +33% in 60 s while the heap in use stayed flat). So the step
thread hands free pages back (``malloc_trim``) between steps, at most every
``TRIM_EVERY_SECONDS``; each call takes it a few to tens of milliseconds. What a step holds
grows with the audio of each pass, and a server that falls behind has seconds of audio per
stream waiting, so it runs passes of at most ``max_step_seconds`` (1 s) per stream: 4 s of
audio for each of 24 streams raised the peak RSS by 167 MB in passes of 4 s (the batcher's
default) and by 82 MB in passes of 1 s. Streaming is exact, so the text does not depend on it.

The shapes of a server's steps change all the time (1 to ``max_streams`` streams, each with
whatever audio arrived), and oneDNN, which runs PyTorch's CPU convolutions (the encoder's
subsampling), compiles and caches kernels for every new input shape (up to 1,024 of them):
52 MB more resident memory after 700 shapes of the shipped model's subsampling, which trimming
does not return, so a server's RSS crept up for as long as it met new shapes.
:func:`configure_serving_process` turns oneDNN off for the whole process, which only a process
that serves should do; ``suite serve`` does. PyTorch's own convolutions keep no such cache, and a
step of the shipped model takes about the same CPU time with either (one thread: 13-14 ms for
one stream, 42-46 ms for 20, with 0.1 s of audio each).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import ipaddress
import json
import logging
import socket
import time
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import torch
from aiohttp import WSCloseCode, WSMsgType, web

from suite.errors import UserError
from suite.model import TaskModel
from suite.streaming import StreamBatcher, StreamUpdate

STATIC_DIR = Path(__file__).resolve().parent / "static"
SAMPLE_DTYPE = np.dtype("<i2")  # little-endian int16, the wire format of audio frames
TRIM_EVERY_SECONDS = 1.0  # how often the step thread hands free heap pages back (glibc)

log = logging.getLogger(__name__)


@dataclass
class _Close:
    """An outbox item: close the connection with ``code`` and ``reason`` (at most 123 bytes)."""

    code: int
    reason: str


@dataclass(eq=False)
class _Client:
    """One connection and its stream; the batcher side is only touched by the step task."""

    ws: web.WebSocketResponse
    outbox: asyncio.Queue[dict[str, Any] | _Close] = field(default_factory=asyncio.Queue)
    heard: float = field(default_factory=time.monotonic)  # when its last frame arrived
    started: bool = False  # it sent audio or ``end``, so it holds one of the streams
    stream: int | None = None  # the batcher's stream id, once the step task opened it
    audio: list[np.ndarray] = field(default_factory=list)  # received, not yet in the batcher
    queued: int = 0  # samples in ``audio``
    ending: bool = False  # the client sent ``end``
    finish_sent: bool = False  # ... and the batcher was told
    closing: bool = False  # the server is closing this connection
    gone: bool = False  # the connection has ended
    text: str = ""  # the last text sent

    def send(self, message: dict[str, Any]) -> None:
        if not self.closing:
            self.outbox.put_nowait(message)

    def error(self, message: str) -> None:
        self.send({"type": "error", "message": message})

    def close(self, code: int, reason: str) -> None:
        if not self.closing:
            self.outbox.put_nowait(_Close(code, reason))
            self.closing = True


class StreamServer:
    """Serves the microphone page and streams every WebSocket client through one batcher.

    Args:
        model: an :class:`TaskModel` trained for streaming.
        att_context: the ``(left, right)`` context to stream with (default: the encoder's).
        max_message_seconds: the most audio one binary frame may carry.
        max_backlog_seconds: the most received audio of one client waiting for the model;
            past it the client is closed (it sends faster than the model keeps up).
        max_streams: concurrent streams (clients that have sent audio); the first audio of one
            more is answered with 1013 (try again later).
        max_waiting: connected clients that have not sent audio yet; one more closes the one
            that has waited longest (1013).
        idle_timeout: seconds a client may send nothing (except while it waits for its final
            text) before it is closed (1008) with a message saying so.
        max_step_seconds: audio per stream in one batched pass of the model; a server that is
            behind runs several passes, so its memory does not grow with how far behind it is.
    """

    def __init__(
        self,
        model: TaskModel,
        att_context: Sequence[int] | None = None,
        max_message_seconds: float = 1.0,
        max_backlog_seconds: float = 30.0,
        max_streams: int = 32,
        max_waiting: int = 64,
        idle_timeout: float = 30.0,
        max_step_seconds: float = 1.0,
    ) -> None:
        if not idle_timeout > 0:
            raise UserError(f"idle_timeout must be a number of seconds above 0, got {idle_timeout}")
        if max_streams < 1 or max_waiting < 1:
            raise UserError(
                f"max_streams and max_waiting must be at least 1, got {max_streams}, {max_waiting}"
            )
        self.batcher = StreamBatcher(
            model, att_context=att_context, max_step_seconds=max_step_seconds
        )
        self.sample_rate = self.batcher.sample_rate
        self.max_message_seconds = max_message_seconds
        self.max_message_bytes = int(max_message_seconds * self.sample_rate) * SAMPLE_DTYPE.itemsize
        self.max_backlog = int(max_backlog_seconds * self.sample_rate)
        self.max_streams = max_streams
        self.max_waiting = max_waiting
        self.idle_timeout = idle_timeout
        self._clients: list[_Client] = []
        self._by_stream: dict[int, _Client] = {}
        self._wake: asyncio.Event | None = None

    def application(self) -> web.Application:
        """The aiohttp app: the page at ``/``, its scripts at ``/static/``, streams at ``/ws``."""
        app = web.Application()
        app.router.add_get("/", self._index)
        app.router.add_get("/ws", self._websocket)
        app.router.add_static("/static/", STATIC_DIR)
        app.cleanup_ctx.append(self._stepping)
        app.on_shutdown.append(self._close_all)
        return app

    # --- HTTP and WebSocket handlers (event loop) -----------------------------------------

    async def _index(self, request: web.Request) -> web.FileResponse:
        return web.FileResponse(STATIC_DIR / "index.html")

    async def _websocket(self, request: web.Request) -> web.WebSocketResponse:
        origin = request.headers.get("Origin")
        if origin is not None and urlsplit(origin).netloc != request.host:
            # Any web page may open a WebSocket to localhost; only this server's own page may.
            raise web.HTTPForbidden(text=f"WebSocket from origin {origin} refused")
        # aiohttp's own limit cuts off frames far over the cap before they are buffered;
        # frames between the two get a clear reason from _receive.
        ws = web.WebSocketResponse(max_msg_size=4 * self.max_message_bytes, heartbeat=20.0)
        await ws.prepare(request)
        waiting = [c for c in self._clients if not (c.gone or c.closing or c.started)]
        if len(waiting) >= self.max_waiting:  # make room: idle connections never keep new ones out
            oldest = min(waiting, key=lambda c: c.heard)
            oldest.error(
                f"{self.max_waiting} connections were waiting without sending audio, so this one, "
                "the longest waiting, was closed to make room; connect when there is audio to send"
            )
            oldest.close(WSCloseCode.TRY_AGAIN_LATER, "server busy: too many idle connections")
        client = _Client(ws)
        self._clients.append(client)
        sender = asyncio.create_task(self._send_forever(client))
        client.send(
            {
                "type": "ready",
                "sample_rate": self.sample_rate,
                "max_message_bytes": self.max_message_bytes,
            }
        )
        self._wake_stepper()  # opens its stream
        try:
            async for message in ws:
                if not self._receive(client, message):
                    break
        finally:
            client.gone = True
            self._wake_stepper()  # frees its stream
            if not client.closing:  # it left on its own: nothing more to send
                sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sender
        return ws

    def _receive(self, client: _Client, message: Any) -> bool:
        """Check and queue one frame; ``False`` once the connection is to close."""
        client.heard = time.monotonic()
        if client.closing:  # its last messages are on their way; nothing it sends counts now
            return message.type in (WSMsgType.BINARY, WSMsgType.TEXT)
        if message.type == WSMsgType.BINARY:
            return self._receive_audio(client, message.data)
        if message.type == WSMsgType.TEXT:
            return self._receive_command(client, message.data)
        return False  # ERROR: aiohttp has closed it (e.g. a frame far over the cap)

    def _receive_audio(self, client: _Client, data: bytes) -> bool:
        size = len(data)
        if size > self.max_message_bytes:
            client.error(
                f"an audio frame of {size} bytes is over the cap of {self.max_message_bytes} "
                f"bytes ({self.max_message_seconds:g} s of {self.sample_rate} Hz int16 audio); "
                "send the audio in smaller frames, e.g. 0.1 s each"
            )
            client.close(WSCloseCode.MESSAGE_TOO_BIG, f"frame of {size} bytes over the cap")
            return False
        if size % SAMPLE_DTYPE.itemsize:
            client.error(
                f"audio frames hold whole little-endian int16 samples (2 bytes each); got {size} "
                "bytes, so this frame was dropped; send whole samples (an even number of bytes)"
            )
            return True
        if client.ending:
            client.error('audio after {"type": "end"} was dropped; connect again for a new stream')
            return True
        if not self._start(client):
            return False
        samples = np.frombuffer(data, dtype=SAMPLE_DTYPE).astype(np.float32) / 32768.0
        if client.queued + samples.size > self.max_backlog:
            client.error(
                f"more than {self.max_backlog / self.sample_rate:g} s of audio are waiting for "
                "the model: send audio in real time, not faster"
            )
            client.close(WSCloseCode.POLICY_VIOLATION, "audio arrives faster than real time")
            return False
        client.audio.append(samples)
        client.queued += samples.size
        self._wake_stepper()
        return True

    def _receive_command(self, client: _Client, data: str) -> bool:
        try:
            command = json.loads(data)
        except ValueError:
            command = None
        if not isinstance(command, dict) or command.get("type") != "end":
            client.error(
                f'the only text message is {{"type": "end"}}, got {data[:60]!r}; send audio as '
                "binary frames of little-endian int16 samples"
            )
            return True
        if not self._start(client):
            return False
        client.ending = True
        self._wake_stepper()
        return True

    def _start(self, client: _Client) -> bool:
        """Give ``client`` one of the streams at its first audio; ``False`` when none is free."""
        if client.started:
            return True
        running = sum(c.started and not (c.gone or c.closing) for c in self._clients)
        if running >= self.max_streams:
            client.error(
                f"the server is busy: all {self.max_streams} streams are in use; connect again "
                "in a moment"
            )
            client.close(WSCloseCode.TRY_AGAIN_LATER, "server busy, try later")
            return False
        client.started = True
        return True

    async def _send_forever(self, client: _Client) -> None:
        """Send ``client``'s outbox in order, skipping partials that newer text replaces."""
        try:
            while True:
                items = [await client.outbox.get()]
                while not client.outbox.empty():
                    items.append(client.outbox.get_nowait())
                for item, after in zip(items, [*items[1:], None], strict=True):
                    if isinstance(item, _Close):
                        await client.ws.close(code=item.code, message=item.reason.encode())
                        return
                    stale = isinstance(after, dict) and after["type"] in ("partial", "final")
                    if item["type"] == "partial" and stale:
                        continue
                    await client.ws.send_json(item)
        except (ConnectionError, RuntimeError):  # the client left while we were sending
            return

    async def _close_all(self, app: web.Application) -> None:
        for client in self._clients:
            if not client.gone:
                await client.ws.close(code=WSCloseCode.GOING_AWAY, message=b"server stopping")

    async def _reap_forever(self) -> None:
        """Close the clients that have sent nothing for ``idle_timeout`` seconds."""
        while True:
            await asyncio.sleep(min(1.0, self.idle_timeout / 4))
            now = time.monotonic()
            for client in self._clients:
                if client.gone or client.closing or client.ending:
                    continue  # an ending client waits for us, not we for it
                if now - client.heard > self.idle_timeout:
                    what = "audio" if client.started else "any audio"
                    client.error(
                        f"no message for {self.idle_timeout:g} s, so the server closed this "
                        f"connection; send {what} continuously (e.g. 0.1 s frames) and "
                        '{"type": "end"} when done, or connect again when there is audio to send'
                    )
                    client.close(WSCloseCode.POLICY_VIOLATION, "idle timeout")

    # --- the step task: the only code that touches the batcher ------------------------------

    def _wake_stepper(self) -> None:
        if self._wake is not None:
            self._wake.set()

    async def _stepping(self, app: web.Application) -> AsyncIterator[None]:
        self._wake = asyncio.Event()
        executor = ThreadPoolExecutor(1, thread_name_prefix="suite-serve-step")
        tasks = [asyncio.create_task(self._step_forever(executor))]
        tasks.append(asyncio.create_task(self._reap_forever()))
        yield
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        executor.shutdown(wait=True)

    async def _step_forever(self, executor: ThreadPoolExecutor) -> None:
        assert self._wake is not None
        loop = asyncio.get_running_loop()
        trim = _malloc_trim()
        trimmed = time.monotonic()
        while True:
            if trim is not None and time.monotonic() - trimmed > TRIM_EVERY_SECONDS:
                await loop.run_in_executor(executor, trim, 0)  # between steps, off the loop
                trimmed = time.monotonic()
            await self._wake.wait()
            self._wake.clear()  # audio that arrives during the step wakes the next one
            try:
                self._hand_over()
                updates = await loop.run_in_executor(executor, self.batcher.step)
            except Exception:
                log.exception("streaming step failed; closing every stream")
                self._fail_all()
                continue
            self._deliver(updates)

    def _hand_over(self) -> None:
        """Open, feed, finish and free batcher streams as the clients asked since the last step."""
        for client in list(self._clients):
            if client.gone:
                if client.stream is not None:
                    self.batcher.close(client.stream)
                    self._by_stream.pop(client.stream, None)
                self._clients.remove(client)
                continue
            if client.closing or not client.started:
                continue
            if client.stream is None:
                client.stream = self.batcher.open()
                self._by_stream[client.stream] = client
            if client.audio:
                audio = np.concatenate(client.audio)  # (S,)
                client.audio, client.queued = [], 0
                self.batcher.accept(client.stream, audio, self.sample_rate)
            if client.ending and not client.finish_sent:
                self.batcher.finish(client.stream)
                client.finish_sent = True

    def _deliver(self, updates: dict[int, StreamUpdate]) -> None:
        for stream, update in updates.items():
            client = self._by_stream.get(stream)
            if client is None or client.gone:
                continue
            if update.final:
                client.send({"type": "final", "text": update.text})
                client.close(WSCloseCode.OK, "stream finished")
                self.batcher.close(stream)
                del self._by_stream[stream]
                client.stream = None
            elif update.text != client.text:
                client.send({"type": "partial", "text": update.text})
            client.text = update.text

    def _fail_all(self) -> None:
        for client in self._clients:
            client.error("the model failed on this audio (see the server's log); connect again")
            client.close(WSCloseCode.INTERNAL_ERROR, "internal error")
            if client.stream is not None:
                self.batcher.close(client.stream)
                client.stream = None
        self._by_stream.clear()


def configure_serving_process() -> None:
    """Process-wide settings for a process whose work is serving streams (``suite serve``
    calls it before it serves): PyTorch's oneDNN convolutions off, whose per-shape kernel cache
    grows with every new batch shape (see the module docstring).

    It changes the whole process, so a library that embeds a :class:`StreamServer` next to
    other work decides for itself whether to call it.
    """
    torch.backends.mkldnn.enabled = False


def _malloc_trim() -> Any:
    """glibc's ``malloc_trim(pad)``, which returns free heap pages to the system; ``None``
    elsewhere (other C libraries return freed memory on their own terms)."""
    try:
        trim = ctypes.CDLL(ctypes.util.find_library("c")).malloc_trim
    except (OSError, AttributeError, TypeError):
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim


def _listen(host: str, port: int) -> socket.socket:
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise UserError(f"a port lies in 0-65535 (0 picks a free one), got {port!r}")
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as e:
        raise UserError(
            f"cannot listen on {host}:{port} ({e.strerror or e}); pick another --port, or "
            "--port 0 for a free one"
        ) from None
    return sock


@contextlib.asynccontextmanager
async def run_server(
    server: StreamServer, host: str = "127.0.0.1", port: int = 0
) -> AsyncIterator[str]:
    """Run ``server`` on ``host:port`` (0: a free port) while the block runs; yields its URL."""
    sock = _listen(host, port)
    runner = web.AppRunner(server.application(), handle_signals=False, access_log=None)
    await runner.setup()
    try:
        await web.SockSite(runner, sock).start()
        shown = f"[{host}]" if ":" in host else host
        yield f"http://{shown}:{sock.getsockname()[1]}/"
    finally:
        await runner.cleanup()


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve(
    model: TaskModel,
    host: str = "127.0.0.1",
    port: int = 8000,
    att_context: Sequence[int] | None = None,
    idle_timeout: float = 30.0,
) -> None:
    """Serve the microphone page for ``model`` until Ctrl-C (the ``suite serve`` command).

    Args:
        model: a model trained for streaming.
        host: the address to listen on (default: this machine only).
        port: 0-65535; 0 picks a free one.
        att_context: the attention context to stream with (default: the encoder's).
        idle_timeout: seconds a client may send nothing before it is closed.
    """
    configure_serving_process()
    server = StreamServer(model, att_context=att_context, idle_timeout=idle_timeout)

    async def main() -> None:
        async with run_server(server, host, port) as url:
            print(f"serving {url} (Ctrl-C to stop)", flush=True)
            if not _is_loopback(host):
                print(
                    f"warning: listening on {host}, so anyone who reaches it can use the model; "
                    "browsers only open the microphone on localhost or over https",
                    flush=True,
                )
            await asyncio.Event().wait()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
