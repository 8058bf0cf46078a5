// talkinghead live page: microphone -> WebSocket (16 kHz int16, 20 ms chunks);
// frames (JPEG) + their 40 ms of audio <- WebSocket, shown and played in sync.
// ?auto=1 starts at once; ?report=1 posts the figures to /live/report when the stream ends;
// ?seconds=N stops the microphone after N seconds.
"use strict";
const params = new URLSearchParams(location.search);
const canvas = document.getElementById("view");
const draw = canvas.getContext("2d");
const status = document.getElementById("status");
const stats = { indices: [], arrivals_ms: [], shown: 0, in_order: true, server: null };
let ws = null, ctx = null, mic = null, playAt = 0;

function show(text) { status.textContent = text; }

function onFrame(buf) {
  const view = new DataView(buf);
  const index = view.getUint32(0, true), n = view.getUint32(4, true);
  const now = performance.now();
  if (stats.indices.length && index !== stats.indices[stats.indices.length - 1] + 1) stats.in_order = false;
  stats.indices.push(index);
  stats.arrivals_ms.push(now);
  const pcm = new Int16Array(buf.slice(8, 8 + n));
  const jpeg = new Blob([buf.slice(8 + n)], { type: "image/jpeg" });
  let delay = 0;
  if (ctx && ctx.state === "running") {
    playAt = Math.max(playAt, ctx.currentTime + 0.06);
    delay = (playAt - ctx.currentTime) * 1000;
    if (document.getElementById("play").checked) {
      const audio = ctx.createBuffer(1, pcm.length, 16000);
      const data = audio.getChannelData(0);
      for (let i = 0; i < pcm.length; i++) data[i] = pcm[i] / 32768;
      const src = ctx.createBufferSource();
      src.buffer = audio;
      src.connect(ctx.destination);
      src.start(playAt);
    }
    playAt += pcm.length / 16000;
  }
  createImageBitmap(jpeg).then((bmp) => setTimeout(() => {
    draw.drawImage(bmp, 0, 0, canvas.width, canvas.height);
    stats.shown += 1;
  }, delay));
  const n_ = stats.indices.length;
  if (n_ % 25 === 0) {
    const span = (stats.arrivals_ms[n_ - 1] - stats.arrivals_ms[Math.max(0, n_ - 26)]) / 1000;
    show(`frame ${index}, ${(Math.min(25, n_ - 1) / span).toFixed(1)} fps`);
  }
}

async function startMic() {
  const media = await navigator.mediaDevices.getUserMedia({ audio: { channelCount: 1, echoCancellation: true } });
  await ctx.audioWorklet.addModule("/live/static/live_worklet.js");
  const node = new AudioWorkletNode(ctx, "live-capture");
  let pending = new Float32Array(0);
  node.port.onmessage = (e) => {
    const joined = new Float32Array(pending.length + e.data.length);
    joined.set(pending); joined.set(e.data, pending.length);
    pending = joined;
    while (pending.length >= 320) {                 // 20 ms at 16 kHz
      const chunk = new Int16Array(320);
      for (let i = 0; i < 320; i++) chunk[i] = Math.max(-1, Math.min(1, pending[i])) * 32767;
      if (ws && ws.readyState === WebSocket.OPEN) ws.send(chunk.buffer);
      pending = pending.slice(320);
    }
  };
  const source = ctx.createMediaStreamSource(media);
  source.connect(node);
  mic = { media, node, source };
  if (params.get("seconds")) setTimeout(stop, 1000 * Number(params.get("seconds")));
}

function stop() {
  stopMic();
  if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify({ type: "stop" }));
}

function stopMic() {
  if (!mic) return;
  mic.source.disconnect(); mic.node.disconnect();
  mic.media.getTracks().forEach((t) => t.stop());
  mic = null;
}

async function finish(msg) {
  stats.server = msg;
  show(`done: ${msg.frames} frames, ${msg.fps.toFixed(1)} fps, latency median ` +
       `${(msg.latency_ms_median || 0).toFixed(0)} ms, p95 ${(msg.latency_ms_p95 || 0).toFixed(0)} ms, ` +
       `${msg.late_frames} late`);
  stopMic();
  document.getElementById("start").disabled = false;
  document.getElementById("stop").disabled = true;
  if (params.get("report") === "1") {
    for (let i = 0; i < 40 && stats.shown < stats.indices.length; i++) {   // let the last frames draw
      await new Promise((r) => setTimeout(r, 50));
    }
    await fetch("/live/report", { method: "POST", headers: { "Content-Type": "application/json" },
                                  body: JSON.stringify(stats) });
  }
  document.title = "done";
}

async function start() {
  document.getElementById("start").disabled = true;
  document.getElementById("stop").disabled = false;
  ctx = ctx || new AudioContext({ sampleRate: 16000 });
  // resumes at once with a user gesture (or autoplay allowed); never wait on it for long
  await Promise.race([ctx.resume().catch(() => {}), new Promise((r) => setTimeout(r, 300))]);
  ws = new WebSocket(`${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/live/ws`);
  ws.binaryType = "arraybuffer";
  ws.onmessage = async (e) => {
    if (typeof e.data !== "string") return onFrame(e.data);
    const msg = JSON.parse(e.data);
    if (msg.type === "hello") {
      canvas.width = msg.width; canvas.height = msg.height;
      document.getElementById("play").checked = msg.input === "file";
      if (msg.input === "mic") await startMic();
      ws.send(JSON.stringify({ type: "start" }));
      show(msg.input === "mic" ? "listening..." : "playing the server's file...");
    } else if (msg.type === "end") {
      await finish(msg);
    } else if (msg.type === "error") {
      show(`error: ${msg.message}`);
    }
  };
  ws.onclose = () => { stopMic(); };
}

document.getElementById("start").onclick = start;
document.getElementById("stop").onclick = stop;
if (params.get("auto") === "1") start();
