/*
 * AudioWorklet for the sandbox phone: microphone → 8 kHz μ-law, 160-byte (20 ms) frames.
 *
 * The context runs at its own rate (`sampleRate`, usually 44.1 or 48 kHz). Each output
 * sample is the mean of the input samples that fall in its 1/8000 s slot (a box filter,
 * enough to keep the worst aliasing out of telephone audio), then G.711 μ-law encoded.
 * Full frames are posted to the main thread as transferable ArrayBuffers.
 */
const TARGET_RATE = 8000;
const FRAME_BYTES = 160;
const BIAS = 0x84;
const CLIP = 32635;

function encodeMuLaw(sample) {
  let pcm = Math.max(-1, Math.min(1, sample)) * 32767;
  pcm = pcm < 0 ? Math.ceil(pcm) : Math.floor(pcm); // truncate, as an int16 cast does
  // The reference G.711 coder works on 14 bits after an arithmetic shift.
  let value = pcm >> 2;
  let mask = 0xff;
  if (value < 0) {
    value = -value;
    mask = 0x7f;
  }
  value = Math.min(value, CLIP >> 2) + (BIAS >> 2);
  let segment = 0;
  while (segment < 7 && value > (0x40 << segment) - 1) segment += 1;
  return ((segment << 4) | ((value >> (segment + 1)) & 0x0f)) ^ mask;
}

class CaptureProcessor extends AudioWorkletProcessor {
  constructor() {
    super();
    this.step = sampleRate / TARGET_RATE;
    this.phase = 0;
    this.sum = 0;
    this.count = 0;
    this.frame = new Uint8Array(FRAME_BYTES);
    this.filled = 0;
    this.muted = false;
    this.port.onmessage = (event) => {
      if (event.data && typeof event.data.muted === "boolean") this.muted = event.data.muted;
    };
  }

  process(inputs) {
    const input = inputs[0];
    const channel = input && input[0];
    if (!channel) return true;
    for (let i = 0; i < channel.length; i += 1) {
      this.sum += channel[i];
      this.count += 1;
      this.phase += 1;
      if (this.phase >= this.step) {
        this.phase -= this.step;
        const value = this.muted ? 0 : this.sum / this.count;
        this.sum = 0;
        this.count = 0;
        this.frame[this.filled] = encodeMuLaw(value);
        this.filled += 1;
        if (this.filled === FRAME_BYTES) {
          const out = this.frame.buffer;
          this.port.postMessage(out, [out]);
          this.frame = new Uint8Array(FRAME_BYTES);
          this.filled = 0;
        }
      }
    }
    return true;
  }
}

registerProcessor("callbridge-capture", CaptureProcessor);
