// The page's logic: list the models, send images (files, drops, webcam frames) to the
// prediction API, or run the model in the browser (onnxruntime-web, served from this
// package), and draw each image's top classes as bars. No network beyond this server.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { models: [], stream: null, key: sessionStorage.getItem("cnnkit-key") || "" };

function headers() {
  return state.key ? { Authorization: `Bearer ${state.key}` } : {};
}

function say(text) { $("status").textContent = text; }

// One request: its response and JSON body (null when it has none); a 401 asks for the key.
async function request(path, options = {}) {
  const response = await fetch(path, { ...options, headers: { ...headers(), ...(options.headers || {}) } });
  let body = null;
  try { body = await response.json(); } catch (e) { body = null; }
  if (response.status === 401) {
    $("key-box").hidden = false;
    $("api-key").focus();
  }
  return { response, body };
}

function failure(response, body) {
  return new Error(body && body.detail ? body.detail : `${response.status} ${response.statusText}`);
}

async function api(path, options = {}) {
  const { response, body } = await request(path, options);
  if (!response.ok) throw failure(response, body);
  return body;
}

function currentModel() {
  return state.models.find((m) => m.name === $("model").value) || state.models[0];
}

function showModel() {
  const model = currentModel();
  if (!model) return;
  $("model-title").textContent = `· ${model.name}`;
  const box = $("classes");
  if (model.classes.length <= 24) {
    box.textContent = `${model.num_classes} classes: ${model.classes.join(", ")}`;
  } else {  // ImageNet's 1,000: a summary line, the full list on request
    const details = document.createElement("details");
    const summary = document.createElement("summary");
    summary.textContent = `${model.num_classes} classes: ${model.classes.slice(0, 8).join(", ")}, …`;
    const all = document.createElement("p");
    all.textContent = model.classes.join(", ");
    details.append(summary, all);
    box.replaceChildren(details);
  }
  $("top-k").max = model.num_classes;
  if (Number($("top-k").value) > model.num_classes) $("top-k").value = model.num_classes;
}

async function loadModels() {
  try {
    const body = await api("/v1/models");
    state.models = body.models;
    $("model").replaceChildren(...state.models.map((m) => new Option(m.name, m.name)));
    showModel();
    say(`Ready: choose or drop images, or use the webcam.`);
  } catch (err) {
    say(`Could not list the models: ${err.message}`);
  }
}

function resultCard(name, url, group) {
  const item = document.createElement("li");
  item.className = "result";
  const img = document.createElement("img");
  img.src = url;
  img.alt = `Image ${name}`;
  const title = document.createElement("h3");
  title.textContent = name;
  const body = document.createElement("div");
  body.className = "bars";
  body.textContent = "Predicting…";
  item.append(img, title, body);
  group.append(item);
  return body;
}

// "unknown" above the bars when the model answers it: unlike every class it knows (its
// unknown rule, with the score) or below the threshold asked for.
function verdict(prediction) {
  if (!prediction.unknown) return null;
  const p = document.createElement("p");
  p.className = "unknown";
  const score = prediction.unknown_score;
  p.textContent = prediction.unlike
    ? `unknown: unlike every class it knows (stranger than ${(score * 100).toFixed(1)}% of known images)`
    : `unknown: top probability below ${prediction.threshold}`;
  return p;
}

function drawBars(target, prediction) {
  target.replaceChildren();
  const note = verdict(prediction);
  if (note) target.append(note);
  const list = document.createElement("ul");
  list.className = "bar-list";
  list.setAttribute("aria-label", "Top classes");
  list.style.listStyle = "none";
  list.style.padding = "0";
  // A multi-label model answers a set of labels (each at its own threshold): those rows
  // are marked and bold; a single-label model's answer is its top class.
  const multi = Array.isArray(prediction.labels);
  const answered = new Set(multi ? prediction.labels.map((e) => e.label) : []);
  if (multi) {
    const head = document.createElement("p");
    head.className = "label-set";
    head.textContent = answered.size ? `Labels: ${[...answered].join(", ")}` : "No label";
    target.append(head);
    list.setAttribute("aria-label", "Top labels (answered ones marked)");
  }
  for (const [i, entry] of prediction.top.entries()) {
    const pct = (entry.probability * 100).toFixed(1);
    const row = document.createElement("li");
    row.className = "bar";
    const chosen = multi ? answered.has(entry.label) : i === 0;
    if (chosen) row.dataset.top = "true";
    const fill = document.createElement("span");
    fill.className = "fill";
    fill.style.width = `${pct}%`;
    const text = document.createElement("span");
    text.className = "text";
    const label = document.createElement(chosen ? "strong" : "span");
    label.className = "label";
    label.textContent = entry.label;
    const value = document.createElement("span");
    value.className = "pct";
    value.textContent = `${pct}%`;
    text.append(label, value);
    row.append(fill, text);
    list.append(row);
  }
  target.append(list);
}

function showError(target, message) {
  target.replaceChildren();
  const p = document.createElement("p");
  p.className = "error";
  p.textContent = message;
  target.append(p);
}

// Each image's own answer on its own card: a prediction, or why that image could not be
// read. The server answers per image (200 when one was read; else an error status with
// the same per-image list); any other failure (busy, no key) is shown on every card.
function showAnswers(model, cards, body, where = "") {
  body.predictions.forEach((p, i) => {
    if (p.error) showError(cards[i], p.error.detail);
    else drawBars(cards[i], p);
  });
  const good = body.predictions.filter((p) => !p.error);
  const bad = body.predictions.length - good.length;
  const failed = bad ? ` (${bad} image${bad > 1 ? "s" : ""} could not be read)` : "";
  if (!good.length) { say(`Error: ${body.detail}`); return; }
  const first = good[0];
  const answer = Array.isArray(first.labels)  // a multi-label model's label set
    ? (first.labels.length ? first.labels.map((e) => e.label).join(", ") : "no label")
    : `${first.unknown ? `unknown (looks most like ${first.top[0].label})` : first.label} ` +
      `(${(first.probability * 100).toFixed(1)}%)`;
  say(`${model.name}${where}: ${answer}` +
      (good.length > 1 ? ` and ${good.length - 1} more` : "") + failed);
}

// In the browser: onnxruntime-web (vendored, WebAssembly) runs the model's own ONNX
// file, fetched once from the server; the images never leave the page.
const local = { sessions: new Map() };

function loadOrt() {
  if (window.ort) return Promise.resolve(window.ort);
  return new Promise((resolve, reject) => {
    const script = document.createElement("script");
    script.src = "/static/vendor/ort.wasm.min.js";
    script.onload = () => {
      window.ort.env.wasm.wasmPaths = "/static/vendor/";
      window.ort.env.wasm.numThreads = 1;  // threads need a cross-origin-isolated page
      resolve(window.ort);
    };
    script.onerror = () => reject(new Error("onnxruntime-web could not be loaded"));
    document.head.append(script);
  });
}

async function localSession(model) {
  if (!local.sessions.has(model.name)) {
    local.sessions.set(model.name, (async () => {
      const ort = await loadOrt();
      if (!model.onnx_file) throw new Error(`${model.name} runs on ${model.backend} on the server, not on an ONNX file: it cannot run in the browser`);
      const response = await fetch(model.onnx_file, { headers: headers() });
      if (!response.ok) {
        let body = null;
        try { body = await response.json(); } catch (e) { body = null; }
        throw failure(response, body);
      }
      const bytes = new Uint8Array(await response.arrayBuffer());
      return ort.InferenceSession.create(bytes, { executionProviders: ["wasm"] });
    })());
  }
  try {
    return await local.sessions.get(model.name);
  } catch (err) {
    local.sessions.delete(model.name);
    throw err;
  }
}

// The model's input as the server makes it: the shorter side resized to decode_size and
// a centred square (transparency shown on white), a centre crop of img_size, grey as
// Pillow computes it, pixels / 255, then the mean and std, in NCHW order.
async function inputTensor(ort, file, model) {
  const pre = model.preprocessing;
  const decode = model.input.decode_size, size = model.input.img_size;
  const bitmap = await createImageBitmap(file);
  const scale = decode / Math.min(bitmap.width, bitmap.height);
  const w = Math.max(decode, Math.round(bitmap.width * scale));
  const h = Math.max(decode, Math.round(bitmap.height * scale));
  const canvas = document.createElement("canvas");
  canvas.width = decode;
  canvas.height = decode;
  const ctx = canvas.getContext("2d", { willReadFrequently: true });
  ctx.fillStyle = "#fff";
  ctx.fillRect(0, 0, decode, decode);
  ctx.imageSmoothingQuality = "high";
  ctx.drawImage(bitmap, -Math.floor((w - decode) / 2), -Math.floor((h - decode) / 2), w, h);
  bitmap.close();
  const off = Math.floor((decode - size) / 2);
  const rgba = ctx.getImageData(off, off, size, size).data;
  const c = pre.channels, plane = size * size;
  const data = new Float32Array(c * plane);
  for (let i = 0; i < plane; i++) {
    const r = rgba[4 * i], g = rgba[4 * i + 1], b = rgba[4 * i + 2];
    if (c === 1 || pre.grey) {  // a grey model, or one trained on grey data: Pillow's luma
      const grey = Math.floor((r * 19595 + g * 38470 + b * 7471 + 0x8000) / 65536);
      for (let k = 0; k < c; k++) data[k * plane + i] = (grey / 255 - pre.mean[k]) / pre.std[k];
    } else {
      data[i] = (r / 255 - pre.mean[0]) / pre.std[0];
      data[plane + i] = (g / 255 - pre.mean[1]) / pre.std[1];
      data[2 * plane + i] = (b / 255 - pre.mean[2]) / pre.std[2];
    }
  }
  return new ort.Tensor("float32", data, [1, c, size, size]);
}

function isMultiLabel(model) {
  return Boolean(model.task && model.task.name === "multi-label");
}

// A multi-label model's answer, as the server gives it: a sigmoid per label, the labels
// at or above their thresholds (the model card's, 0.5 where it has none), the top k.
function labelSet(model, logits, k) {
  const cuts = model.task.thresholds || model.classes.map(() => 0.5);
  const all = Array.from(logits, (v, j) => ({ label: model.classes[j],
                                              probability: 1 / (1 + Math.exp(-v)), cut: cuts[j] }))
    .sort((a, b) => b.probability - a.probability);
  const labels = all.filter((e) => e.probability >= e.cut)
    .map((e) => ({ label: e.label, probability: e.probability }));
  const top = all.slice(0, k).map((e) => ({ label: e.label, probability: e.probability }));
  const thresholds = Object.fromEntries(model.classes.map((c, j) => [c, cuts[j]]));
  return { label: labels.map((e) => e.label).join("|"), labels, top,
           probability: top.length ? top[0].probability : 0, thresholds };
}

// A value's share of the held-out known images with a lower one, read from their
// quantiles as cnnkit.tasks.ood does with NumPy's interp (0 below all of them, 1 from the
// last up; a value on tied quantiles gets the highest of their levels).
function share(value, q) {
  const n = q.length - 1;
  if (value < q[0]) return 0;
  let j = 0;
  while (j < n && q[j + 1] <= value) j++;
  return j >= n ? 1 : (j + (value - q[j]) / (q[j + 1] - q[j])) / n;
}

// The server's answer from one image's raw logits (and its feature distance, the file's
// second output, when the unknown rule reads one), as its task makes it: the softmax at
// the task's temperature, and with an unknown rule its score against the rule's line:
// the energy's share of the known images (-logsumexp of the raw logits), or with the
// distance the larger of both shares, read again against the known images' own.
function answerOf(model, filename, logits, k, distance) {
  if (isMultiLabel(model)) return { filename, ...labelSet(model, logits, k) };
  const task = model.task || {};
  const t = task.temperature || 1;
  const top = Math.max(...logits);
  const exp = Array.from(logits, (v) => Math.exp((v - top) / t));
  const sum = exp.reduce((a, b) => a + b, 0);
  const ranked = exp.map((e, j) => ({ label: model.classes[j], probability: e / sum }))
    .sort((a, b) => b.probability - a.probability).slice(0, k);
  const answer = { filename, label: ranked[0].label, probability: ranked[0].probability };
  const rule = task.unknown;
  if (rule) {
    const energy = -(top + Math.log(Array.from(logits, (v) => Math.exp(v - top))
      .reduce((a, b) => a + b, 0)));
    const both = rule.combined && rule.distances && distance !== undefined;
    const score = both
      ? share(Math.max(share(energy, rule.quantiles), share(distance, rule.distances)), rule.combined)
      : share(energy, rule.quantiles);
    answer.unknown = both ? score > rule.kept : energy > rule.threshold;
    answer.unknown_score = score;
    answer.unlike = answer.unknown;
    if (answer.unknown) { answer.label = "unknown"; answer.reason = "unlike every class"; }
  }
  answer.top = ranked;
  return answer;
}

// One answer per image, shaped as the server's: a prediction, or the image's own error.
async function predictHere(model, files, k) {
  const session = await localSession(model);
  const ort = window.ort;
  const answers = [];
  for (const [i, file] of files.entries()) {
    const filename = file.name || `image ${i + 1}`;
    let x;
    try {
      x = await inputTensor(ort, file, model);
    } catch (err) {
      answers.push({ filename, error: { status: 415, detail: `${filename}: this browser could not read it as an image` } });
      continue;
    }
    const out = await session.run({ [session.inputNames[0]]: x });
    const distance = out.distance ? out.distance.data[0] : undefined;
    answers.push(answerOf(model, filename, out[session.outputNames[0]].data, k, distance));
  }
  const read = answers.filter((a) => !a.error).length;
  return { model: model.name, predictions: answers,
           detail: read ? undefined : `None of the ${answers.length} images could be read` };
}

async function classifyHere(model, files, cards) {
  const k = Math.max(1, Number($("top-k").value) || 5);
  say(`Running ${model.name} in this browser on ${files.length} image${files.length > 1 ? "s" : ""}…`);
  try {
    showAnswers(model, cards, await predictHere(model, files, k), " (in this browser)");
  } catch (err) {
    for (const card of cards) showError(card, err.message);
    say(`Error: ${err.message}`);
  }
}

async function classify(files) {
  const model = currentModel();
  if (!model || !files.length) return;
  const group = document.createDocumentFragment();  // newest request first, its files in order
  const cards = files.map((f, i) => resultCard(f.name || `image ${i + 1}`, URL.createObjectURL(f), group));
  $("results").prepend(group);
  if ($("in-browser").checked) { await classifyHere(model, files, cards); return; }
  const form = new FormData();
  for (const f of files) form.append("file", f, f.name || "webcam.png");
  form.append("top_k", String(Math.max(1, Number($("top-k").value) || 5)));
  say(`Sending ${files.length} image${files.length > 1 ? "s" : ""} to ${model.name}…`);
  try {
    const { response, body } = await request(
      `/v1/models/${encodeURIComponent(model.name)}/predict`, { method: "POST", body: form });
    if (body && Array.isArray(body.predictions) && body.predictions.length === files.length) {
      showAnswers(model, cards, body);
      return;
    }
    throw failure(response, body);
  } catch (err) {
    for (const card of cards) showError(card, err.message);
    say(`Error: ${err.message}`);
  }
}

async function startCamera() {
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    say("This browser gives no webcam access here (it needs https or localhost).");
    return;
  }
  try {
    state.stream = await navigator.mediaDevices.getUserMedia({ video: true, audio: false });
  } catch (err) {
    say(`The webcam could not be opened: ${err.message}`);
    return;
  }
  const video = $("video");
  video.srcObject = state.stream;
  video.hidden = false;
  $("camera-start").hidden = true;
  $("camera-snap").hidden = false;
  $("camera-stop").hidden = false;
  $("camera-snap").focus();
  say("Webcam on: press “Classify this frame”.");
}

function stopCamera() {
  if (state.stream) state.stream.getTracks().forEach((t) => t.stop());
  state.stream = null;
  $("video").hidden = true;
  $("camera-start").hidden = false;
  $("camera-snap").hidden = true;
  $("camera-stop").hidden = true;
}

async function snap() {
  const video = $("video");
  if (!video.videoWidth) { say("The webcam has no picture yet; try again."); return; }
  const canvas = document.createElement("canvas");
  canvas.width = video.videoWidth;
  canvas.height = video.videoHeight;
  canvas.getContext("2d").drawImage(video, 0, 0);
  const blob = await new Promise((resolve) => canvas.toBlob(resolve, "image/png"));
  const stamp = new Date().toLocaleTimeString();
  await classify([new File([blob], `webcam ${stamp}.png`, { type: "image/png" })]);
}

function setUp() {
  $("model").addEventListener("change", showModel);
  $("files").addEventListener("change", (e) => { classify([...e.target.files]); e.target.value = ""; });
  $("api-key").addEventListener("change", (e) => {
    state.key = e.target.value.trim();
    sessionStorage.setItem("cnnkit-key", state.key);
    loadModels();
  });
  const drop = $("drop");
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    classify([...e.dataTransfer.files].filter((f) => f.type.startsWith("image/")));
  });
  $("camera-start").addEventListener("click", startCamera);
  $("camera-stop").addEventListener("click", stopCamera);
  $("camera-snap").addEventListener("click", snap);
  loadModels();
}

document.addEventListener("DOMContentLoaded", setUp);
