// cnnkit studio: the page. Alpine.js holds the state; uPlot draws the curves; the
// server's API is under /api (see cnnkit/studio/routes/). No build step.
"use strict";

const KEY_COOKIE = "cnnkit_studio_key";
const FRAME = 224;            // webcam frames are square crops of this side
const RECORD_EVERY_MS = 120;  // a frame every this while "Hold to record" is held

const enc = encodeURIComponent;

function studio() {
  return {
    tabs: [
      {id: "data", label: "1 Data"}, {id: "check", label: "2 Check"},
      {id: "train", label: "3 Train"}, {id: "understand", label: "4 Understand"},
      {id: "try", label: "5 Try it"}, {id: "ship", label: "6 Ship"},
      {id: "learn", label: "7 Learn"},
    ],
    modes: [
      {id: "quick", label: "Quick", help: "a head on a pretrained network's features: seconds"},
      {id: "better", label: "Better", help: "fine-tune the pretrained network: minutes"},
      {id: "scratch", label: "Scratch", help: "a small CNN from random weights"},
    ],
    tab: "data", project: {name: "", root: "", classes: [], runs: []}, images: {},
    newClass: "", error: "", toast: {text: "", undo: null},
    camera: {on: false, stream: null}, recording: null, recorded: 0, pending: 0,
    mode: "quick", epochs: null, plan: {line: "", busy: false, key: ""},
    job: {id: null, running: false, text: "", fraction: 0, eta: "", rows: [], stopping: false},
    charts: null, run: "", live: false, threshold: 0.5, prediction: null, tried: "",
    check: null, checking: false, insight: null, cell: null, cmds: null,
    exporting: false, exportText: "",
    conv: {preset: "edges (Sobel x)", kernel: [[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], stride: 1,
           padding: 0, arith: "", window: "", size: "", gray: null, w: 0, h: 0, out: null},
    kernels: {
      "edges (Sobel x)": [[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]],
      "edges (Sobel y)": [[-1, -2, -1], [0, 0, 0], [1, 2, 1]],
      "outline": [[-1, -1, -1], [-1, 8, -1], [-1, -1, -1]],
      "blur": [[1 / 9, 1 / 9, 1 / 9], [1 / 9, 1 / 9, 1 / 9], [1 / 9, 1 / 9, 1 / 9]],
      "sharpen": [[0, -1, 0], [-1, 5, -1], [0, -1, 0]],
      "identity": [[0, 0, 0], [0, 1, 0], [0, 0, 0]],
      "custom": null,
    },
    enc,

    async start() {
      await this.refresh();
      const hash = location.hash.slice(1);
      if (this.tabs.some(t => t.id === hash)) this.go(hash);
      if (this.project.training) this.follow(this.project.training);
      else {
        const last = (await this.api("GET", "/api/jobs?kind=train")).jobs.pop();
        if (last) this.follow(last.id);
      }
    },

    // -- the API --------------------------------------------------------------------
    async api(method, url, body, raw) {
      const headers = {"X-Studio": "1"};
      let payload = body;
      if (body !== undefined && !raw) { headers["Content-Type"] = "application/json"; payload = JSON.stringify(body); }
      if (raw) headers["Content-Type"] = raw;
      const res = await fetch(url, {method, headers, body: payload});
      if (res.status === 401) {
        const key = prompt("This studio needs its API key (given to cnnkit studio with --api-key):");
        if (key) {
          document.cookie = `${KEY_COOKIE}=${enc(key)}; path=/; SameSite=Strict`;
          return this.api(method, url, body, raw);
        }
      }
      const data = await res.json().catch(() => ({}));
      if (!res.ok) {
        const err = new Error(data.detail || `${method} ${url}: ${res.status}`);
        err.status = res.status;
        throw err;
      }
      return data;
    },
    async guarded(fn) {
      try { return await fn(); } catch (e) { this.error = e.message; }
    },
    say(text, undo) { this.toast = {text, undo: undo || null}; setTimeout(() => { if (this.toast.text === text) this.toast.text = ""; }, 8000); },

    go(id) {
      this.tab = id;
      history.replaceState(null, "", "#" + id);
      if (id === "train") { this.estimate(); this.$nextTick(() => this.drawCharts()); }
      if (id === "understand") this.refresh().then(() => this.loadUnderstanding());  // a run may have finished since
      if (id === "ship") this.refresh().then(() => this.loadCommands());  // a run may have finished since
      if (id === "learn" && !this.conv.gray) this.learnSample();
    },

    async refresh() {
      await this.guarded(async () => {
        const p = await this.api("GET", "/api/project");
        const old = Object.fromEntries(this.project.classes.map(c => [c.name, c]));
        p.classes = p.classes.map(c => ({...c, _edit: false, _new: c.name, _all: (old[c.name] || {})._all || false, _drop: false}));
        this.project = p;
        if (!this.run || !p.runs.some(r => r.name === this.run)) this.run = p.runs.length ? p.runs[0].name : "";
        for (const c of p.classes) this.loadImages(c.name);
      });
    },
    async loadImages(name) {
      const r = await this.api("GET", `/api/classes/${enc(name)}/images`).catch(() => null);
      if (r) this.images[name] = r.images;
    },
    imageUrl(cls, image) { return `/api/classes/${enc(cls)}/images/${image.split("/").map(enc).join("/")}`; },

    // -- 1. classes and images --------------------------------------------------------
    async addClass() {
      await this.guarded(async () => {
        await this.api("POST", "/api/classes", {name: this.newClass});
        this.newClass = "";
        await this.refresh();
      });
    },
    async renameClass(c) {
      await this.guarded(async () => {
        await this.api("POST", `/api/classes/${enc(c.name)}/rename`, {name: c._new});
        await this.refresh();
      });
    },
    async deleteClass(name) {
      if (!confirm(`Delete the class ${name} and its images? (They go to the project's trash; Undo puts them back.)`)) return;
      await this.guarded(async () => {
        const r = await this.api("DELETE", `/api/classes/${enc(name)}`);
        this.say(`Deleted ${name}.`, r.undo);
        await this.refresh();
      });
    },
    async deleteImage(cls, image) {
      await this.guarded(async () => {
        const r = await this.api("DELETE", this.imageUrl(cls, image));
        this.say(`Deleted ${image}.`, r.undo);
        await this.refresh();
      });
    },
    async undo() {
      const id = this.toast.undo;
      this.toast = {text: "", undo: null};
      await this.guarded(async () => { await this.api("POST", `/api/undo/${enc(id)}`); await this.refresh(); });
    },
    async uploadFiles(cls, files) {
      const list = Array.from(files || []);
      let done = 0, failed = [];
      for (const f of list) {
        try {
          await this.api("POST", `/api/classes/${enc(cls)}/images?filename=${enc(f.name)}`, f, f.type || "application/octet-stream");
          done++;
        } catch (e) { failed.push(e.message); }
      }
      if (failed.length) this.error = `${failed.length} of ${list.length} files were not added: ${failed[0]}`;
      if (done) this.say(`Added ${done} image${done > 1 ? "s" : ""} to ${cls}.`);
      await this.refresh();
    },

    // -- the webcam -----------------------------------------------------------------
    async startCamera() {
      if (this.camera.on) return true;
      try {
        const stream = await navigator.mediaDevices.getUserMedia({video: {width: 640, height: 480}, audio: false});
        const video = document.getElementById("video");
        video.srcObject = stream;
        await video.play().catch(() => {});
        this.camera = {on: true, stream};
        return true;
      } catch (e) {
        this.error = `The webcam could not be opened (${e.name}: ${e.message}); allow the camera for this page, or choose image files.`;
        return false;
      }
    },
    stopCamera() {
      if (this.camera.stream) this.camera.stream.getTracks().forEach(t => t.stop());
      this.camera = {on: false, stream: null};
      this.live = false;
    },
    grab(type = "image/jpeg") {
      const video = document.getElementById("video");
      if (!video.videoWidth) return Promise.resolve(null);
      const side = Math.min(video.videoWidth, video.videoHeight);
      const canvas = document.getElementById("grab");
      canvas.width = FRAME; canvas.height = FRAME;
      canvas.getContext("2d").drawImage(video, (video.videoWidth - side) / 2, (video.videoHeight - side) / 2, side, side, 0, 0, FRAME, FRAME);
      return new Promise(resolve => canvas.toBlob(resolve, type, 0.9));
    },
    async startRecording(cls) {
      if (!this.camera.on) return;
      this.recording = cls; this.recorded = 0;
      const uploads = [];
      while (this.recording === cls) {
        const began = performance.now();
        this.pending++;  // counted from the grab on, so that "saved" means every frame
        const blob = await this.grab();
        if (blob) {
          uploads.push(this.api("POST", `/api/classes/${enc(cls)}/images?filename=webcam.jpg`, blob, "image/jpeg")
            .then(() => { this.recorded++; }, e => { this.error = e.message; })
            .finally(() => { this.pending--; }));
        } else this.pending--;
        await new Promise(r => setTimeout(r, Math.max(0, RECORD_EVERY_MS - (performance.now() - began))));
      }
      await Promise.all(uploads);
      await this.refresh();
    },
    stopRecording() { this.recording = null; },

    // -- 2. check -----------------------------------------------------------------
    async startCheck() {
      await this.guarded(async () => {
        this.checking = true; this.check = null;
        const job = await this.api("POST", "/api/jobs", {kind: "check", options: {mode: this.mode}});
        await this.waitJob(job.id);
        this.check = {...await this.api("GET", `/api/jobs/${job.id}/check`), mode: this.mode};
      });
      this.checking = false;
    },
    waitJob(id, onEvent) {
      return new Promise((resolve, reject) => {
        const source = new EventSource(`/api/jobs/${id}/events`);
        source.onmessage = m => { const e = JSON.parse(m.data); if (onEvent) onEvent(e); };
        source.addEventListener("done", m => {
          source.close();
          const s = JSON.parse(m.data);
          if (s.state === "done") resolve(s); else reject(new Error(s.message || s.state));
        });
      });
    },

    // -- 3. train -----------------------------------------------------------------
    async estimate() {
      const key = `${this.mode}:${this.epochs || ""}:${this.project.classes.map(c => c.name + c.images).join(",")}`;
      if (this.plan.key === key || (this.job.running)) return;
      this.plan = {line: "", busy: true, key};
      try {
        const options = {mode: this.mode, ...(this.epochs ? {epochs: this.epochs} : {})};
        const job = await this.api("POST", "/api/jobs", {kind: "plan", options});
        let line = "";
        await this.waitJob(job.id, e => { if (e.kind === "plan") line = e.line + (e.faster ? " " + e.faster : ""); });
        if (this.plan.key === key) this.plan = {line, busy: false, key};
      } catch (e) {
        if (this.plan.key === key) this.plan = {line: "Cannot train yet: " + e.message, busy: false, key};
      }
    },
    async train() {
      await this.guarded(async () => {
        const options = {mode: this.mode, ...(this.epochs ? {epochs: this.epochs} : {})};
        const job = await this.api("POST", "/api/jobs", {kind: "train", options});
        this.follow(job.id, true);
      });
    },
    async stopTraining() {
      this.job.stopping = true;
      await this.guarded(() => this.api("POST", `/api/jobs/${this.job.id}/stop`));
    },
    follow(id, fresh = false) {
      if (this._source) this._source.close();
      this.job = {id, running: true, text: "Starting…", fraction: 0, eta: "", rows: [], warning: "", stopping: false, began: Date.now(), planned: 0, mode: "", followed: Date.now(), fresh, live: false};
      this.drawCharts();
      const source = new EventSource(`/api/jobs/${id}/events`);
      this._source = source;
      source.onmessage = m => this.onEvent(JSON.parse(m.data));
      source.addEventListener("done", m => {
        source.close();
        const s = JSON.parse(m.data);
        this.job.running = false;
        this.refresh();  // its run is finished now (exportable), or gone
        if (s.state === "done") { this.job.fraction = 1; }
        else if (s.state === "failed" || s.state === "lost") this.job.text = "Failed: " + (s.message || s.state);
        else if (s.state === "stopped") this.job.text = "Stopped.";
      });
    },
    onEvent(e) {
      const j = this.job;
      switch (e.kind) {
        case "plan": j.planned = e.seconds; j.began = e.t * 1000; j.text = e.line; j.epochs = e.epochs; j.mode = e.mode; break;
        case "run": j.text = "Run folder: " + e.run_dir.split("/").pop(); break;
        case "working": j.text = `${e.what}: ${e.done} of ${e.total}`; j.fraction = 0.8 * e.done / Math.max(1, e.total) * (j.mode === "features" ? 1 : 0.1); break;
        case "phase": if (e.announce) j.text = `Phase: ${e.name}`; break;
        case "step": {
          j.text = `epoch ${e.epoch}: step ${e.step}/${e.steps}, loss ${this.fmt(e.loss)}, accuracy ${this.pct(e.acc)}`;
          const total = j.epochs || e.epoch;
          j.fraction = Math.min(0.99, (e.epoch - 1 + e.step / e.steps) / total);
          this.eta(e.t);
          break;
        }
        case "epoch":
          j.rows.push(e.row);
          j.fraction = Math.min(0.99, e.epoch / e.epochs);
          j.text = `${e.unit} ${e.epoch}/${e.epochs} done` + (e.improved ? " (best so far)" : "") + (e.stopping ? ` — stopping (${e.stopping})` : "");
          this.eta(e.t);
          this.drawCharts();
          break;
        case "best":  // features mode saves its one, final model: try it while it is tested
          if (j.mode === "features") this.goLive(j, e.path.split("/").slice(-2)[0]);
          break;
        case "test":  // the kept model is final: try it while the report is written
          j.text = "Tested the kept model on the held-out images.";
          j.warning = e.at_chance || "";  // cnnkit train's last line: the model is at chance
          this.goLive(j, e.run_dir.split("/").pop());
          break;
        case "end": j.text = "Finished" + (e.test ? `: test accuracy ${this.pct(e.test.accuracy)} on ${e.test.n} images` : "."); j.fraction = 1; j.eta = ""; break;
        case "error": j.text = `${e.status === "KILLED" ? "Stopped" : "Failed"}: ${e.message}`; break;
        case "job":
          if (e.what === "trained") { j.running = false; j.fraction = 1; this.goLive(j, e.run); }
          if (e.what === "failed") j.text = "Failed: " + e.message;
          if (e.what === "stopped") j.text = "Stopped.";
          break;
      }
    },
    goLive(j, run) {
      // A run this page watched finish (not one replayed after a reload): try it at once.
      if (j.live) return;
      j.live = true;
      this.refresh().then(() => {
        this.run = run;
        if (this.job.id === j.id && this.tab === "train" && Date.now() - j.followed < 3600000 && j.fresh) {
          this.go("try"); this.startLive();
        }
      });
    },
    eta(t) {
      const j = this.job;
      if (j.fraction > 0.02) {
        const spent = t - j.began / 1000;
        const left = spent * (1 - j.fraction) / j.fraction;
        j.eta = `about ${this.seconds(left)} left (${this.seconds(spent)} so far)`;
      }
    },
    drawCharts() {
      const rows = this.job.rows;
      const x = rows.map((r, i) => i + 1);
      const series = (keys) => [x, ...keys.map(k => rows.map(r => (r[k] === "" || r[k] == null) ? null : +r[k]))];
      const make = (id, title, keys, pct) => {
        const el = document.getElementById(id);
        if (!el || !el.offsetParent) return null;
        el.innerHTML = "";
        return new uPlot({title, width: Math.min(520, el.clientWidth || 520), height: 220,
          scales: {x: {time: false}, ...(pct ? {y: {range: [0, 1]}} : {})},
          axes: [{label: "epoch"}, {size: 60, values: (u, v) => v.map(n => pct ? (100 * n).toFixed(0) + "%" : +n.toPrecision(3))}],
          series: [{}, {label: "train", stroke: "#3366cc", width: 2, points: {show: true}}, {label: "validation", stroke: "#dd6622", width: 2, points: {show: true}}]},
          series(keys), el);
      };
      make("loss-chart", "loss", ["train_loss", "val_loss"], false);
      make("acc-chart", "accuracy", ["train_acc", "val_acc"], true);
    },

    // -- 4. understand ---------------------------------------------------------------
    async loadUnderstanding() {
      this.insight = null; this.cell = null;
      if (!this.run) return;
      try { this.insight = await this.api("GET", `/api/runs/${enc(this.run)}/understand`); }
      catch (e) { if (e.status !== 404) this.error = e.message; }
    },
    async analyse() {
      await this.guarded(async () => {
        const job = await this.api("POST", "/api/jobs", {kind: "understand", options: {run: this.run}});
        this.say("Analysing the run's held-out images…");
        await this.waitJob(job.id);
        await this.loadUnderstanding();
      });
    },
    missingLine() {  // images deleted or moved since the run was tested are not counted
      const i = this.insight, m = i.missing || 0;
      return `${m} of the run's ${m + (i.n || 0)} held-out images ${m === 1 ? "is" : "are"} no longer where the run found ${m === 1 ? "it" : "them"} (deleted or moved since), so this is not the run's test accuracy.`;
    },
    cellImages() {
      if (!this.insight || !this.cell) return [];
      const [i, j] = this.cell;
      return this.insight.images.filter(im => im.true === i && im.predicted === j && im.class);
    },
    async relabel(t, to) {  // one click: the image moves to the class the model saw
      await this.guarded(async () => {
        await this.api("POST", `/api/classes/${enc(t.class)}/move/${t.image.split("/").map(enc).join("/")}`, {to});
        this.say(`Moved ${t.image} to ${to}; train again to use it.`);
        t.class = null;
        await this.refresh();
      });
    },

    // -- 5. try it -------------------------------------------------------------------
    async startLive() {
      if (await this.startCamera()) { this.live = true; this.predictLoop(); }
    },
    async predictLoop() {
      if (this._looping) return;
      this._looping = true;
      try {
        while (this.live && this.camera.on && this.tab === "try") {
          const blob = await this.grab();
          if (blob && this.run) {
            try {
              const answer = await this.predictBlob(blob);
              if (this.live) { this.prediction = answer; this.tried = ""; }  // not after a pause
            }
            catch (e) { this.error = e.message; this.live = false; }
          }
          await new Promise(r => setTimeout(r, 60));
        }
      } finally { this._looping = false; }
    },
    predictBlob(blob) {
      const unknown = this.threshold > 0 ? `&threshold=${this.threshold}` : "";
      return this.api("POST", `/api/runs/${enc(this.run)}/predict?top_k=5${unknown}`, blob, blob.type || "application/octet-stream");
    },
    async predictFile(file) {
      if (!file) return;
      this.live = false;
      await this.guarded(async () => {
        this.prediction = await this.predictBlob(file);
        this.tried = URL.createObjectURL(file);
      });
    },

    // -- 6. ship ---------------------------------------------------------------------
    currentRun() { return this.project.runs.find(r => r.name === this.run); },
    runLabel(r) { return `${r.name}` + (r.training ? " — still training (its best model so far)" : r.test_accuracy != null ? ` — test ${this.pct(r.test_accuracy)}` + (r.warning ? " (at chance: see the warning)" : "") : ""); },
    async loadCommands() {
      this.cmds = null;
      if (this.run) this.cmds = await this.api("GET", `/api/runs/${enc(this.run)}/commands`).catch(() => null);
    },
    async exportRun(int8) {
      this.exporting = true; this.exportText = int8 ? "Exporting and calibrating int8…" : "Exporting…";
      try {
        const job = await this.api("POST", "/api/jobs", {kind: "export", options: {run: this.run, int8}});
        let text = "";
        await this.waitJob(job.id, e => { if (e.what === "exported") text = `Written: ${e.files.join(", ")} (checked against PyTorch: differs by at most ${e.max_prob_diff.toExponential(1)})`; });
        this.exportText = text;
        await this.refresh();
        await this.loadCommands();
      } catch (e) { this.exportText = ""; this.error = e.message; }
      this.exporting = false;
    },

    // -- 7. learn --------------------------------------------------------------------
    async learnSample() {
      const c = this.project.classes.find(c => (this.images[c.name] || []).length);
      if (c) this.learnUrl(this.imageUrl(c.name, this.images[c.name][0].name));
    },
    learnFile(file) { if (file) this.learnUrl(URL.createObjectURL(file)); },
    async learnSnapshot() { const b = await this.grab("image/png"); if (b) this.learnUrl(URL.createObjectURL(b)); },
    learnUrl(url) {
      const img = new Image();
      img.onload = () => {
        const side = 96, scale = side / Math.max(img.width, img.height);
        const w = Math.max(8, Math.round(img.width * scale)), h = Math.max(8, Math.round(img.height * scale));
        const canvas = document.getElementById("learn-in");
        canvas.width = w; canvas.height = h;
        const ctx = canvas.getContext("2d");
        ctx.drawImage(img, 0, 0, w, h);
        const rgba = ctx.getImageData(0, 0, w, h).data, gray = new Float32Array(w * h);
        for (let i = 0; i < w * h; i++) gray[i] = (0.299 * rgba[4 * i] + 0.587 * rgba[4 * i + 1] + 0.114 * rgba[4 * i + 2]) / 255;
        this.conv.gray = gray; this.conv.w = w; this.conv.h = h;
        this.paint(canvas, gray, w, h, 0, 1);
        this.convolve();
      };
      img.src = url;
    },
    setKernel() { const k = this.kernels[this.conv.preset]; if (k) this.conv.kernel = k.map(r => r.slice()); this.convolve(); },
    convolve() {
      const c = this.conv;
      if (!c.gray) return;
      const k = c.kernel, K = k.length, S = Math.max(1, c.stride | 0), P = Math.max(0, c.padding | 0);
      const W = c.w, H = c.h;
      const ow = Math.floor((W + 2 * P - K) / S) + 1, oh = Math.floor((H + 2 * P - K) / S) + 1;
      c.size = `${W}×${H}`;
      c.arith = `output width = ⌊(W + 2P − K) / S⌋ + 1 = ⌊(${W} + 2·${P} − ${K}) / ${S}⌋ + 1 = <b>${ow}</b>; height = ⌊(${H} + 2·${P} − ${K}) / ${S}⌋ + 1 = <b>${oh}</b>`;
      if (ow < 1 || oh < 1) { c.out = null; return; }
      const out = new Float32Array(ow * oh);
      for (let y = 0; y < oh; y++) for (let x = 0; x < ow; x++) {
        let s = 0;
        for (let i = 0; i < K; i++) for (let j = 0; j < K; j++) {
          const yy = y * S + i - P, xx = x * S + j - P;
          if (yy >= 0 && yy < H && xx >= 0 && xx < W) s += k[i][j] * c.gray[yy * W + xx];
        }
        out[y * ow + x] = s;
      }
      c.out = {data: out, w: ow, h: oh};
      const lo = Math.min(...out), hi = Math.max(...out);
      this.paint(document.getElementById("learn-out"), out, ow, oh, lo, hi);
      const relu = out.map(v => Math.max(0, v));
      this.paint(document.getElementById("learn-relu"), relu, ow, oh, 0, Math.max(1e-6, hi));
      const pw = Math.floor(ow / 2), ph = Math.floor(oh / 2), pool = new Float32Array(pw * ph);
      for (let y = 0; y < ph; y++) for (let x = 0; x < pw; x++) {
        pool[y * pw + x] = Math.max(relu[2 * y * ow + 2 * x], relu[2 * y * ow + 2 * x + 1], relu[(2 * y + 1) * ow + 2 * x], relu[(2 * y + 1) * ow + 2 * x + 1]);
      }
      if (pw && ph) this.paint(document.getElementById("learn-pool"), pool, pw, ph, 0, Math.max(1e-6, hi));
      c.arith += `; feature map ${ow}×${oh} → ReLU ${ow}×${oh} → 2×2 max pooling (stride 2): ⌊${ow}/2⌋×⌊${oh}/2⌋ = <b>${pw}×${ph}</b>`;
      if (!c.window) this.explain(Math.floor(ow / 2), Math.floor(oh / 2));
    },
    pickWindow(ev) {
      const c = this.conv, canvas = ev.target, rect = canvas.getBoundingClientRect();
      const px = (ev.clientX - rect.left) * c.w / rect.width, py = (ev.clientY - rect.top) * c.h / rect.height;
      const S = Math.max(1, c.stride | 0), P = c.padding | 0;
      if (!c.out) return;
      this.explain(Math.min(c.out.w - 1, Math.max(0, Math.round((px + P - 1) / S))), Math.min(c.out.h - 1, Math.max(0, Math.round((py + P - 1) / S))));
    },
    explain(x, y) {
      const c = this.conv, k = c.kernel, K = k.length, S = Math.max(1, c.stride | 0), P = c.padding | 0;
      const terms = [];
      let s = 0;
      for (let i = 0; i < K; i++) for (let j = 0; j < K; j++) {
        const yy = y * S + i - P, xx = x * S + j - P;
        const v = (yy >= 0 && yy < c.h && xx >= 0 && xx < c.w) ? c.gray[yy * c.w + xx] : 0;
        s += k[i][j] * v;
        terms.push(`${(+k[i][j]).toFixed(2)}·${v.toFixed(2)}`);
      }
      c.window = `output (${x}, ${y}) = ${terms.join(" + ")} = <b>${s.toFixed(3)}</b>; after ReLU: <b>${Math.max(0, s).toFixed(3)}</b>`;
      const canvas = document.getElementById("learn-in");
      this.paint(canvas, c.gray, c.w, c.h, 0, 1);
      const ctx = canvas.getContext("2d");
      ctx.strokeStyle = "#e0282e"; ctx.lineWidth = 1;
      ctx.strokeRect(x * S - P + 0.5, y * S - P + 0.5, K - 1, K - 1);
    },
    paint(canvas, data, w, h, lo, hi) {
      canvas.width = w; canvas.height = h;
      const ctx = canvas.getContext("2d"), img = ctx.createImageData(w, h), span = (hi - lo) || 1;
      for (let i = 0; i < w * h; i++) {
        const v = Math.round(255 * Math.min(1, Math.max(0, (data[i] - lo) / span)));
        img.data[4 * i] = img.data[4 * i + 1] = img.data[4 * i + 2] = v; img.data[4 * i + 3] = 255;
      }
      ctx.putImageData(img, 0, 0);
    },

    // -- formatting ------------------------------------------------------------------
    fmt(v) { return (v === "" || v == null) ? "–" : (+v).toFixed(4); },
    pct(v) { return (v === "" || v == null) ? "–" : (100 * v).toFixed(1) + "%"; },
    seconds(s) { s = Math.max(0, Math.round(s)); return s < 90 ? `${s} s` : `${Math.floor(s / 60)} min ${s % 60} s`; },
  };
}
