// AudioWorklet processor: mixes the microphone to mono, resamples it to the model's rate and
// posts blocks of little-endian int16 PCM (the wire format of suite serve) to the page.
//
// Resampling is band-limited: every output sample is a Blackman-windowed sinc interpolation
// of the input, cut off at the lower of the two Nyquist frequencies so that going down from
// 44.1/48 kHz to 16 kHz does not fold high frequencies into the speech band. The kernel is
// tabulated at PHASES fractional offsets, so the audio thread does no trigonometry.

const ZERO_CROSSINGS = 32; // of the sinc, each side: a transition band of ~1.4 kHz at 16 kHz
const PHASES = 256;

class PcmSender extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const { targetRate, blockSeconds } = options.processorOptions;
    this.step = sampleRate / targetRate; // input samples per output sample
    const cutoff = Math.min(1, targetRate / sampleRate); // of the input's Nyquist frequency
    this.half = Math.ceil(ZERO_CROSSINGS / cutoff); // kernel half-width, in input samples
    // table[p * width + k]: the weight of input sample (centre - half + 1 + k) for an output
    // at centre + p / PHASES.
    const width = 2 * this.half;
    this.table = new Float32Array((PHASES + 1) * width);
    for (let p = 0; p <= PHASES; p++) {
      for (let k = 0; k < width; k++) {
        const x = p / PHASES - (k - this.half + 1); // distance from the input sample
        const t = Math.PI * x * cutoff;
        const sinc = x === 0 ? 1 : Math.sin(t) / t;
        const w = Math.abs(x) >= this.half ? 0
          : 0.42 + 0.5 * Math.cos(Math.PI * x / this.half) + 0.08 * Math.cos(2 * Math.PI * x / this.half);
        this.table[p * width + k] = cutoff * sinc * w;
      }
    }
    this.width = width;
    this.input = new Float32Array(0); // input samples not yet fully used
    this.position = this.half - 1; // next output, in input samples from input[0]
    this.blockSize = Math.max(1, Math.round(targetRate * blockSeconds));
    this.block = new Int16Array(this.blockSize);
    this.filled = 0;
    this.flushed = false;
    this.port.onmessage = (event) => {
      if (event.data === "flush") { // the page stops: send what is left, then say so
        this.post();
        this.port.postMessage("flushed");
        this.flushed = true; // and nothing after it
      }
    };
  }

  post() {
    if (this.filled === 0) return;
    const block = this.block.slice(0, this.filled);
    this.port.postMessage(block.buffer, [block.buffer]);
    this.filled = 0;
  }

  emit(value) {
    const v = Math.max(-1, Math.min(1, value));
    this.block[this.filled++] = v < 0 ? v * 32768 : v * 32767;
    if (this.filled === this.blockSize) this.post();
  }

  process(inputs) {
    if (this.flushed) return false; // the stream has ended: let the browser drop this node
    const channels = inputs[0];
    if (!channels || channels.length === 0) return true; // no input connected yet
    const frames = channels[0].length;
    const buffer = new Float32Array(this.input.length + frames);
    buffer.set(this.input);
    for (const channel of channels) {
      for (let i = 0; i < frames; i++) buffer[this.input.length + i] += channel[i] / channels.length;
    }
    // An output needs inputs up to centre + half; make every output whose window is complete.
    while (Math.floor(this.position) + this.half < buffer.length) {
      const centre = Math.floor(this.position);
      const phase = Math.round((this.position - centre) * PHASES);
      const weights = phase * this.width;
      const first = centre - this.half + 1;
      let acc = 0;
      for (let k = 0; k < this.width; k++) acc += buffer[first + k] * this.table[weights + k];
      this.emit(acc);
      this.position += this.step;
    }
    const keep = Math.floor(this.position) - this.half + 1; // first input still needed
    this.input = buffer.slice(keep);
    this.position -= keep;
    return true;
  }
}

registerProcessor("pcm-sender", PcmSender);
