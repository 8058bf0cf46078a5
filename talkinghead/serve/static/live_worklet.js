// Hands the microphone's samples (at the AudioContext's rate, 16 kHz) to the page.
class Capture extends AudioWorkletProcessor {
  process(inputs) {
    const ch = inputs[0] && inputs[0][0];
    if (ch) this.port.postMessage(ch.slice(0));
    return true;
  }
}
registerProcessor("live-capture", Capture);
