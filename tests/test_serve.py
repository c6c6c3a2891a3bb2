"""``suite serve``'s WebSocket protocol: streams, refused frames, oversized frames, clients that
vanish, and that none of them disturbs another client (the browser test is test_serve_browser)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ctypes
import ctypes.util
import gc
import os
import struct
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import numpy as np
import pytest
import torch

import suite
from suite.config import ModelConfig
from suite.features import Fbank
from suite.heads.ctc import CtcHead
from suite.model import TaskModel, build_model, save_package
from suite.serve import StreamServer, configure_serving_process, run_server
from suite.tasks.asr import Transcriber
from suite.tokenizers import CharTokenizer

SR = 16000


def tones(seconds: float, seed: int) -> np.ndarray:
    """Int16 tones and silences a quarter second each: features that change, so text does too."""
    t = np.arange(int(seconds * SR)) / SR
    segment = (t * 4).astype(int)
    freqs = 200 + 300 * ((segment * (7 + seed)) % 11)
    audio = 0.5 * np.sin(2 * np.pi * freqs * t) * (segment % 3 != seed % 3)
    return (audio * 32767).astype("<i2")


@pytest.fixture(scope="module")
def model() -> TaskModel:
    """A random causal conformer whose CTC head is confident, so that the text varies."""
    torch.manual_seed(0)
    encoder = suite.create_encoder("conformer", preset="tiny", causal=True, att_context=(4, 1))
    tokenizer = CharTokenizer()
    head = CtcHead(encoder.output_dim, tokenizer.vocab_size)
    model = TaskModel(Fbank(), encoder, {"ctc": head}, tokenizer, ModelConfig()).eval()
    with torch.no_grad():  # centre the head on the mean feature: the changes pick letters
        audio = torch.from_numpy(tones(1.0, seed=9).astype(np.float32) / 32768)[None]
        features = encoder(*model.frontend(audio, torch.tensor([audio.shape[1]]))).features
        head.proj.weight.mul_(20)
        head.proj.bias.copy_(-head.proj.weight @ features[0].mean(dim=0))
    return model


def offline(model: TaskModel, pcm: np.ndarray) -> str:
    text = Transcriber(model).transcribe(pcm.astype(np.float32) / 32768, sample_rate=SR)[0]
    assert len(set(text)) > 3  # varied text: comparing with it has power
    return text


def run(coroutine):
    return asyncio.run(asyncio.wait_for(coroutine, timeout=60))


@asynccontextmanager
async def serving(server: StreamServer) -> AsyncIterator[tuple[str, aiohttp.ClientSession]]:
    async with run_server(server) as url, aiohttp.ClientSession() as http:
        yield url, http


async def stream(http: aiohttp.ClientSession, url: str, pcm: np.ndarray) -> list[dict]:
    """Send ``pcm`` in 0.1 s frames and ``end``; every message the server sent, in order."""
    async with http.ws_connect(url + "ws") as ws:
        for begin in range(0, len(pcm), 1600):
            await ws.send_bytes(pcm[begin : begin + 1600].tobytes())
            await asyncio.sleep(0.005)  # let other clients interleave
        await ws.send_json({"type": "end"})
        messages = [m.json() async for m in ws if m.type == aiohttp.WSMsgType.TEXT]
        assert ws.close_code == 1000
        return messages


def check_stream(messages: list[dict], expected: str) -> None:
    assert messages[0] == {"type": "ready", "sample_rate": SR, "max_message_bytes": 32000}
    assert messages[-1] == {"type": "final", "text": expected}
    partials = [m["text"] for m in messages[1:-1]]
    assert partials and all(m["type"] == "partial" for m in messages[1:-1])
    for before, after in zip(partials, [*partials[1:], expected], strict=False):
        assert after.startswith(before)


async def raw_websocket(url: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A bare WebSocket handshake, so a test can send any bytes and drop the connection."""
    u = urlsplit(url)
    reader, writer = await asyncio.open_connection(u.hostname, u.port)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        f"GET /ws HTTP/1.1\r\nHost: {u.netloc}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    assert b" 101 " in (await reader.readuntil(b"\r\n\r\n")).split(b"\r\n")[0]
    return reader, writer


def masked_frame(opcode: int, payload: bytes) -> bytes:
    """One final client frame (masked, as RFC 6455 requires), payload under 64 KiB."""
    size = len(payload)
    length = struct.pack("!B", 0x80 | size) if size < 126 else struct.pack("!BH", 0xFE, size)
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes([0x80 | opcode]) + length + mask + masked


def test_page_and_its_scripts_are_served(model):
    async def main():
        async with serving(StreamServer(model)) as (url, http):
            async with http.get(url) as page:
                assert page.status == 200 and 'id="toggle"' in await page.text()
            for script, needle in [("app.js", "getUserMedia"), ("pcm-worklet.js", "Processor")]:
                async with http.get(url + "static/" + script) as r:
                    assert r.status == 200 and needle in await r.text()
                    assert "javascript" in r.content_type

    run(main())


def test_concurrent_streams_get_partials_and_their_offline_text(model):
    pcms = [tones(2.0, seed=0), tones(1.5, seed=1)]

    async def main():
        server = StreamServer(model)
        async with serving(server) as (url, http):
            results = await asyncio.gather(*(stream(http, url, pcm) for pcm in pcms))
            await asyncio.sleep(0.1)
            assert server.batcher.streams == []  # finished streams are freed
        return results

    results = run(main())
    for messages, pcm in zip(results, pcms, strict=True):
        check_stream(messages, offline(model, pcm))


def test_refused_frames_get_an_error_and_the_stream_goes_on(model):
    pcm = tones(1.5, seed=2)

    async def main():
        async with serving(StreamServer(model)) as (url, http):
            async with http.ws_connect(url + "ws") as ws:
                assert (await ws.receive_json())["type"] == "ready"
                await ws.send_bytes(pcm[:800].tobytes() + b"\x01")  # odd byte count
                await ws.send_str("not json")
                await ws.send_json({"type": "start"})
                errors = [await ws.receive_json() for _ in range(3)]
                for half_second in np.split(pcm, 3):
                    await ws.send_bytes(half_second.tobytes())
                await ws.send_json({"type": "end"})
                await ws.send_bytes(pcm[:100].tobytes())  # after the end
                messages = [m.json() async for m in ws]
                assert ws.close_code == 1000
        return errors, messages

    errors, messages = run(main())
    assert all(e["type"] == "error" for e in errors)
    assert "1601 bytes" in errors[0]["message"] and "int16" in errors[0]["message"]
    assert all('only text message is {"type": "end"}' in e["message"] for e in errors[1:])
    assert any("after" in m.get("message", "") for m in messages)
    assert messages[-1] == {"type": "final", "text": offline(model, pcm)}  # bad frames dropped


def test_oversized_frames_close_only_their_client(model):
    pcm = tones(2.0, seed=3)

    async def oversized(http, url, seconds: float):
        async with http.ws_connect(url + "ws") as ws:
            await ws.receive_json()
            await ws.send_bytes(np.zeros(int(seconds * SR), "<i2").tobytes())
            messages = [m.json() async for m in ws if m.type == aiohttp.WSMsgType.TEXT]
            return ws.close_code, messages

    async def main():
        server = StreamServer(model)
        async with serving(server) as (url, http):
            results = await asyncio.gather(
                stream(http, url, pcm), oversized(http, url, 2.0), oversized(http, url, 10.0)
            )
            await asyncio.sleep(0.1)
            assert server.batcher.streams == []
        return results

    good, (code, messages), (hard_code, _) = run(main())
    check_stream(good, offline(model, pcm))
    assert code == 1009 and "64000 bytes is over the cap of 32000" in messages[-1]["message"]
    assert hard_code == 1009  # far over the cap: aiohttp cuts it off before buffering it


def test_abrupt_disconnect_frees_its_stream_and_others_go_on(model):
    pcm = tones(2.0, seed=4)

    async def vanish(url: str):
        reader, writer = await raw_websocket(url)
        for begin in range(0, 8000, 1600):
            writer.write(masked_frame(0x2, pcm[begin : begin + 1600].tobytes()))
            await asyncio.sleep(0.02)
        writer.write(masked_frame(0x2, b"\x00"))  # half a sample, mid-stream
        await asyncio.sleep(0.1)
        writer.transport.abort()  # no close frame: the network went away

    async def main():
        server = StreamServer(model)
        async with serving(server) as (url, http):
            good, _ = await asyncio.gather(stream(http, url, pcm), vanish(url))
            for _ in range(50):  # the server notices the reset, then frees the stream
                if not server.batcher.streams:
                    break
                await asyncio.sleep(0.05)
            assert server.batcher.streams == []
            assert (await stream(http, url, pcm))[-1] == good[-1]  # and serves new clients
        return good

    check_stream(run(main()), offline(model, pcm))


def test_a_vanished_client_leaves_nothing_behind(model):
    pcm = tones(2.0, seed=8)

    async def main():
        server = StreamServer(model)
        async with serving(server) as (url, http):
            reader, writer = await raw_websocket(url)
            for begin in range(0, 8000, 1600):
                writer.write(masked_frame(0x2, pcm[begin : begin + 1600].tobytes()))
            for _ in range(100):  # until the server has stepped its audio
                streams = list(server.batcher._streams.values())
                if streams and streams[0].batch is not None:
                    break
                await asyncio.sleep(0.05)
            (client,), (entry,) = server._clients, streams
            held = entry.batch.states if entry.states is None else entry.states
            kept = [weakref.ref(x) for x in (client, client.outbox, entry, held[1], held[2])]
            del client, entry, streams, held
            writer.transport.abort()  # no close frame: the network went away
            good = await stream(http, url, pcm)  # others go on, and steps run
            for _ in range(50):
                if not server._clients:
                    break
                await asyncio.sleep(0.05)
            gc.collect()
            # Its connection, outbox, stream, encoder and decoder states are all gone.
            assert [ref() for ref in kept] == [None] * len(kept)
            assert server._clients == [] and server._by_stream == {}
            assert server.batcher.streams == []
        return good

    check_stream(run(main()), offline(model, pcm))


def test_a_server_behind_runs_passes_of_bounded_audio(model):
    pcm = tones(2.0, seed=9)

    async def main():
        server = StreamServer(model, max_step_seconds=0.25)
        run_pass, pieces = server.batcher._run, []

        def recording(streams, audio, final):
            pieces.extend(len(a) for a in audio)
            return run_pass(streams, audio, final)

        server.batcher._run = recording
        async with serving(server) as (url, http), http.ws_connect(url + "ws") as ws:
            for begin in range(0, len(pcm), SR // 2):  # 2 s at once: the model falls behind
                await ws.send_bytes(pcm[begin : begin + SR // 2].tobytes())
            await ws.send_json({"type": "end"})
            messages = [m.json() async for m in ws if m.type == aiohttp.WSMsgType.TEXT]
        return messages, pieces

    messages, pieces = run(main())
    assert messages[-1] == {"type": "final", "text": offline(model, pcm)}
    assert max(pieces) == SR // 4 and len(pieces) >= 8  # 2 s in passes of 0.25 s


def _anon_mb_after_trim() -> float:
    """Resident anonymous memory after glibc handed its free heap pages back, in MB."""
    gc.collect()
    ctypes.CDLL(ctypes.util.find_library("c")).malloc_trim(0)
    status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
    return int(status["RssAnon"].split()[0]) / 1024


def _convolve_new_shapes(channels: int) -> None:
    """A subsampling-like stack (the encoder's) over 20 batch shapes seen nowhere else."""
    torch.manual_seed(0)
    convs = torch.nn.Sequential(
        torch.nn.Conv2d(1, channels, 3, stride=2),
        torch.nn.Conv2d(channels, channels, 3, stride=2, groups=channels),
        torch.nn.Conv2d(channels, channels, 1),
    )
    with torch.inference_mode():
        for batch in range(1, 5):
            for frames in range(9, 19, 2):
                convs(torch.randn(batch, 1, frames, 24))


def _anon_mb_kept_by_new_shapes(serving: bool) -> float:
    """Anonymous memory that 20 new convolution shapes leave behind, in MB (fresh process)."""
    if serving:
        configure_serving_process()
        assert not torch.backends.mkldnn.enabled
    _convolve_new_shapes(channels=5)  # the first call's one-off allocations
    before = _anon_mb_after_trim()
    _convolve_new_shapes(channels=11)
    return _anon_mb_after_trim() - before


def _kept_in_fresh_process(serving: bool) -> float:
    """:func:`_anon_mb_kept_by_new_shapes` in a new interpreter, whose oneDNN cache is empty."""
    import subprocess
    import sys

    code = (
        f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import test_serve; "
        f"print(test_serve._anon_mb_kept_by_new_shapes({serving}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return float(out.stdout.split()[-1])


@pytest.mark.skipif(
    not Path("/proc/self/status").exists() or not hasattr(ctypes.CDLL(None), "malloc_trim"),
    reason="reads RssAnon after glibc's malloc_trim",
)
def test_serving_process_keeps_no_memory_per_new_shape():
    kept = _kept_in_fresh_process(serving=True)
    assert kept < 0.5, f"{kept:.1f} MB kept after 20 new shapes"
    if torch.backends.mkldnn.is_available():  # what the settings remove: oneDNN's kernel cache
        cached = _kept_in_fresh_process(serving=False)
        assert cached > 1.5 + kept, f"oneDNN kept {cached:.1f} MB, the serving settings {kept:.1f}"


def test_limits_on_streams_backlog_and_origin(model):
    async def main():
        server = StreamServer(model, max_streams=1, max_backlog_seconds=0.5)
        async with serving(server) as (url, http):
            async with http.ws_connect(url + "ws") as first:
                await first.receive_json()
                await first.send_bytes(tones(0.1, seed=0).tobytes())  # takes the only stream
                async with http.ws_connect(url + "ws") as second:
                    assert (await second.receive_json())["type"] == "ready"  # connecting is free
                    await second.send_bytes(tones(0.1, seed=0).tobytes())
                    messages = [m.json() async for m in second if m.type == aiohttp.WSMsgType.TEXT]
                    assert second.close_code == 1013  # busy: try again later
                    assert "all 1 streams are in use" in messages[-1]["message"]
                await first.send_bytes(tones(1.0, seed=0).tobytes())  # 1 s > 0.5 s of backlog
                messages = [m.json() async for m in first if m.type == aiohttp.WSMsgType.TEXT]
                assert first.close_code == 1008 and "real time" in messages[-1]["message"]
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await http.ws_connect(url + "ws", origin="http://example.com")
            assert refused.value.status == 403

    run(main())


async def closing_messages(ws) -> tuple[int | None, list[dict]]:
    """The text messages up to the server's close frame, and the code in that frame (a client
    that reads late finds the connection gone when it answers, so its own close_code is 1006)."""
    messages = []
    while True:
        message = await ws.receive()
        if message.type == aiohttp.WSMsgType.TEXT:
            messages.append(message.json())
        elif message.type == aiohttp.WSMsgType.CLOSE:
            return message.data, messages
        elif message.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
            return ws.close_code, messages


def test_idle_clients_time_out_with_a_message(model):
    pcm = tones(1.0, seed=5)

    async def main():
        server = StreamServer(model, idle_timeout=0.3)
        async with serving(server) as (url, http):
            silent = await http.ws_connect(url + "ws")  # connects, never sends
            paused = await http.ws_connect(url + "ws")  # sends some audio, then nothing
            await paused.send_bytes(pcm[:1600].tobytes())
            results = await asyncio.gather(
                closing_messages(silent), closing_messages(paused), stream(http, url, pcm)
            )
            for _ in range(50):
                if not server.batcher.streams:
                    break
                await asyncio.sleep(0.05)
            assert server.batcher.streams == []  # the paused stream is freed
        return results

    (silent_code, silent), (paused_code, paused), good = run(main())
    for code, messages, what in [
        (silent_code, silent, "any audio"),
        (paused_code, paused, "audio"),
    ]:
        assert code == 1008
        message = messages[-1]["message"]
        assert "no message for 0.3 s" in message and f"send {what} continuously" in message
    check_stream(good, offline(model, pcm))  # a client that keeps sending is not idle


def test_idle_connections_cannot_starve_active_clients(model):
    pcms = [tones(1.0, seed=6), tones(1.2, seed=7)]

    async def main():
        server = StreamServer(model, max_streams=2, max_waiting=3, idle_timeout=60)
        async with serving(server) as (url, http):
            idle = [await http.ws_connect(url + "ws") for _ in range(8)]
            for ws in idle:  # all connected at once, more than the streams and the waiting room
                assert (await ws.receive_json())["type"] == "ready"
            results = await asyncio.gather(*(stream(http, url, pcm) for pcm in pcms))
            evicted = []
            for ws in idle:  # the evicted ones were told why, then closed; the rest still wait
                with contextlib.suppress(asyncio.TimeoutError):
                    message = await asyncio.wait_for(ws.receive(), timeout=0.2)
                    evicted.append((message.json()["message"], *await closing_messages(ws)))
            for ws in idle:
                await ws.close()
        return results, evicted

    results, evicted = run(main())
    for messages, pcm in zip(results, pcms, strict=True):
        check_stream(messages, offline(model, pcm))
    assert len(evicted) == 8 + 2 - 3  # the waiting room holds 3: the longest waiting made room
    for error, code, _ in evicted:
        assert code == 1013 and "the longest waiting, was closed to make room" in error


def test_port_is_validated(model, capsys):
    from suite.cli import main
    from suite.errors import UserError

    for port in ("99999", "-1", "http"):
        with pytest.raises(SystemExit) as exited:
            main(["serve", "streaming-asr", "--port", port])
        assert exited.value.code == 2
        err = capsys.readouterr().err
        assert "--port" in err and ("0-65535" in err or "port number" in err)
    with pytest.raises(SystemExit):
        main(["serve", "streaming-asr", "--idle-timeout", "0"])
    assert "above 0" in capsys.readouterr().err

    async def main_run():
        async with run_server(StreamServer(model), port=99999):
            pass

    with pytest.raises(UserError, match="0-65535"):
        run(main_run())


def test_serve_refuses_a_model_not_trained_for_streaming(tmp_path, capsys):
    from suite.cli import main

    config = ModelConfig(
        encoder={"name": "conformer", "preset": "tiny"}, tokenizer={"name": "char"}
    )
    package = save_package(build_model(config, CharTokenizer()), tmp_path / "pkg", card="# t\n")
    assert main(["serve", str(package), "--port", "0"]) == 2
    assert "not trained for streaming" in capsys.readouterr().err
