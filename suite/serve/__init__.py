"""``suite serve``: a web page that streams the microphone to a model over a WebSocket.

The page captures audio with ``getUserMedia``, resamples it to the model's rate in an
AudioWorklet and sends it as PCM frames; the server runs every connected client as one stream
of a single :class:`~suite.streaming.StreamBatcher`, so all clients share one batched step, and
sends back partial and final text. :mod:`suite.serve.server` documents the protocol.
"""

from suite.serve.server import StreamServer, configure_serving_process, run_server, serve

__all__ = ["StreamServer", "configure_serving_process", "run_server", "serve"]
