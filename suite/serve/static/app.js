// The page of suite serve: microphone -> AudioWorklet (mono, resampled, int16) -> WebSocket,
// and the server's partial and final text back onto the page. The protocol is documented in
// suite/serve/server.py.

const button = document.getElementById("toggle");
const statusLine = document.getElementById("status");
const errorLine = document.getElementById("error");
const partialText = document.getElementById("partial");
const finalText = document.getElementById("final");
const historyList = document.getElementById("history");

const BLOCK_SECONDS = 0.1; // audio per WebSocket frame
let session = null; // the recording in progress

function setStatus(text) { statusLine.textContent = text; }
function showError(text) { errorLine.textContent = text; }

function microphoneError(error) {
  switch (error.name) {
    case "NotAllowedError":
    case "SecurityError":
      return "Microphone permission was denied. Allow the microphone for this page in the " +
        "browser's site settings, then press Start again.";
    case "NotFoundError":
    case "OverconstrainedError":
      return "No microphone was found. Plug one in (or enable it in the system settings), " +
        "then press Start again.";
    case "NotReadableError":
      return "The microphone is in use by another program or could not be opened. Close " +
        "the other program, then press Start again.";
    default:
      return `Could not open the microphone: ${error.name}: ${error.message}`;
  }
}

// Resolves with the server's "ready" message (which says the sample rate to send).
function connect() {
  const url = new URL("ws", location.href);
  url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
  const ws = new WebSocket(url);
  ws.binaryType = "arraybuffer";
  return new Promise((resolve, reject) => {
    ws.onmessage = (event) => {
      const message = JSON.parse(event.data);
      if (message.type === "ready") resolve({ ws, ready: message });
    };
    ws.onerror = () => reject(new Error(`cannot connect to ${url}; is suite serve running?`));
    ws.onclose = (event) => reject(new Error(`the server closed the connection: ${event.reason || event.code}`));
  });
}

async function start() {
  showError("");
  if (!window.isSecureContext || !navigator.mediaDevices?.getUserMedia) {
    showError("Browsers only open the microphone on secure pages: open this page as " +
      `http://localhost:${location.port || 80}/ on the machine running suite serve, or serve it over https.`);
    return;
  }
  button.disabled = true;
  setStatus("asking for the microphone ...");
  let media;
  try {
    media = await navigator.mediaDevices.getUserMedia({
      audio: { channelCount: 1, echoCancellation: false, noiseSuppression: false, autoGainControl: false },
    });
  } catch (error) {
    showError(microphoneError(error));
    setStatus("idle");
    button.disabled = false;
    return;
  }
  let ws, ready, context;
  try {
    ({ ws, ready } = await connect());
    context = new AudioContext(); // at the device's rate; the worklet resamples
    await context.audioWorklet.addModule("static/pcm-worklet.js");
  } catch (error) {
    media.getTracks().forEach((track) => track.stop());
    context?.close();
    showError(error.message);
    setStatus("idle");
    button.disabled = false;
    return;
  }
  // No outputs: the node is a sink, so nothing plays back, yet the browser still runs it.
  const node = new AudioWorkletNode(context, "pcm-sender", {
    numberOfInputs: 1,
    numberOfOutputs: 0,
    processorOptions: { targetRate: ready.sample_rate, blockSeconds: BLOCK_SECONDS },
  });
  const source = context.createMediaStreamSource(media);
  source.connect(node);
  session = { ws, context, media, node, stopping: false };
  let ended = false; // after {"type": "end"} the server takes no more audio
  node.port.onmessage = (event) => {
    if (ended || ws.readyState !== WebSocket.OPEN) return;
    if (event.data === "flushed") {
      ended = true;
      ws.send(JSON.stringify({ type: "end" }));
      return;
    }
    ws.send(event.data);
  };
  ws.onmessage = (event) => {
    const message = JSON.parse(event.data);
    if (message.type === "partial") {
      partialText.textContent = message.text;
    } else if (message.type === "final") {
      finalText.textContent = message.text;
      partialText.textContent = "";
    } else if (message.type === "error") {
      showError(`server: ${message.message}`);
    }
  };
  ws.onclose = (event) => {
    if (event.code !== 1000) showError(`the server closed the stream: ${event.reason || `code ${event.code}`}`);
    release();
  };
  if (finalText.textContent) { // the last transcript moves down to the earlier ones
    const item = document.createElement("li");
    item.textContent = finalText.textContent;
    historyList.prepend(item);
  }
  finalText.textContent = "";
  partialText.textContent = "";
  button.textContent = "Stop";
  button.disabled = false;
  setStatus("listening");
}

// Stop capturing; the server answers the end of the audio with the final text.
function stop() {
  session.stopping = true;
  session.media.getTracks().forEach((track) => track.stop());
  session.node.port.postMessage("flush");
  button.disabled = true;
  setStatus("finishing ...");
}

function release() {
  if (!session) return;
  session.media.getTracks().forEach((track) => track.stop());
  session.context.close();
  session = null;
  button.textContent = "Start";
  button.disabled = false;
  setStatus("idle");
}

button.addEventListener("click", () => (session ? stop() : start()));
