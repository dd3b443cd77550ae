// The PixelVLA operator console page: the camera with the policy's overlay, prompts drawn with the mouse,
// instruction, e-stop, status. Talks to the console node over one WebSocket (protocol: console/server.py).
// Image coordinates are the frame's pixels, origin at the top-left pixel's corner (VisualPrompt's convention).
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  const view = $("view");
  const ctx = view.getContext("2d");
  const DRAG_PX = 4;  // CSS px the pointer moves before a press is a drag (a box) rather than a click (a point)
  const PENDING_MS = 3000;  // a sent prompt is drawn until the console reports it in force, at most this long

  const app = {  // window.pixelvlaConsole: read by tests and the benchmark
    ws: null, connected: false, backoff: 500, session: sessionId(),
    colors: { target: [60, 255, 60], place: [60, 140, 255], path: [255, 60, 60], mask: [0, 200, 255] },
    bitmap: null, shown: null,  // the frame on screen and its header (seq, stamp, frame_id, width, height, path)
    state: null, tool: "click", marks: "target",
    gesture: null,  // the press under way: {start, now, screen, drag, marks, frame}
    line: [],  // the line tool's vertices so far
    pending: {},  // marks -> {prompt, until}: sent, not yet reported in force
    painted: [],  // [{seq, latency_ms}] camera stamp -> painted, newest last
  };
  window.pixelvlaConsole = app;

  function sessionId() {  // kept by this tab across reloads and reconnects (control stays with it)
    let id = sessionStorage.getItem("pixelvla-console-session");
    if (!id) {
      id = Array.from(crypto.getRandomValues(new Uint8Array(12)), (b) => b.toString(16).padStart(2, "0")).join("");
      sessionStorage.setItem("pixelvla-console-session", id);
    }
    return id;
  }

  // ------------------------------------------------------------------ connection
  function connect() {
    const params = new URLSearchParams({ session: app.session });
    const token = new URLSearchParams(location.search).get("token");
    if (token) params.set("token", token);
    const ws = new WebSocket(`${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws?${params}`);
    ws.binaryType = "arraybuffer";
    app.ws = ws;
    ws.onopen = () => { app.connected = true; app.backoff = 500; showConnection(); };
    ws.onclose = () => {
      app.connected = false;
      showConnection();
      setTimeout(connect, app.backoff);
      app.backoff = Math.min(app.backoff * 2, 5000);
    };
    ws.onmessage = (event) => {
      if (typeof event.data === "string") onMessage(JSON.parse(event.data));
      else onFrame(event.data);
    };
  }

  function send(request) {
    if (!app.connected) {
      say("not connected to the console: nothing was sent", true);
      return false;
    }
    app.ws.send(JSON.stringify(request));
    return true;
  }

  function onMessage(msg) {
    if (msg.type === "hello") app.colors = msg.colors;
    else if (msg.type === "state") onState(msg);
    else if (msg.type === "result") onResult(msg);
  }

  async function onFrame(buffer) {
    const length = new DataView(buffer).getUint32(0, true);
    const header = JSON.parse(new TextDecoder().decode(new Uint8Array(buffer, 4, length)));
    let bitmap;
    try {
      bitmap = await createImageBitmap(new Blob([new Uint8Array(buffer, 4 + length)], { type: "image/jpeg" }));
    } catch (error) {
      send({ type: "ack", seq: header.seq });  // the next frame may do better
      return;
    }
    requestAnimationFrame(() => {
      if (app.bitmap) app.bitmap.close();
      app.bitmap = bitmap;
      app.shown = header;
      draw();
      const painted = performance.timeOrigin + performance.now();  // ms since the epoch, this machine's clock
      app.painted.push({ seq: header.seq, latency_ms: painted - (header.stamp[0] * 1e3 + header.stamp[1] / 1e6) });
      if (app.painted.length > 2000) app.painted.shift();
      send({ type: "ack", seq: header.seq, painted });
    });
  }

  // ------------------------------------------------------------------ drawing
  const css = (rgb, alpha = 1) => `rgba(${rgb[0]}, ${rgb[1]}, ${rgb[2]}, ${alpha})`;
  let drawQueued = false;
  function requestDraw() {
    if (!drawQueued) {
      drawQueued = true;
      requestAnimationFrame(() => { drawQueued = false; draw(); });
    }
  }

  function fit() {  // the largest view of the frame's aspect ratio that fits the column and the window's height
    if (!app.shown) return;
    const wrap = $("view-wrap");
    const top = wrap.getBoundingClientRect().top + window.scrollY;
    const height = Math.max(160, window.innerHeight - top - 60);  // room for the hint below
    const scale = Math.min(wrap.clientWidth / app.shown.width, height / app.shown.height);
    const w = `${Math.floor(app.shown.width * scale)}px`, h = `${Math.floor(app.shown.height * scale)}px`;
    if (view.style.width !== w || view.style.height !== h) { view.style.width = w; view.style.height = h; }
  }

  function draw() {
    fit();
    const rect = view.getBoundingClientRect();
    const dpr = window.devicePixelRatio || 1;
    const w = Math.max(1, Math.round(rect.width * dpr)), h = Math.max(1, Math.round(rect.height * dpr));
    if (view.width !== w || view.height !== h) { view.width = w; view.height = h; }
    ctx.clearRect(0, 0, w, h);
    $("no-image").hidden = !!app.bitmap;
    if (!app.bitmap || !app.shown) return;
    ctx.drawImage(app.bitmap, 0, 0, w, h);
    const sx = w / app.shown.width, sy = h / app.shown.height;
    const at = ([x, y]) => [x * sx, y * sy];  // image px -> canvas px
    if (app.shown.path) drawPath(app.shown.path.map((p) => (p ? at(p) : null)), app.colors.path, dpr);
    for (const marks of ["place", "target"]) {
      const pending = app.pending[marks];
      const prompt = pending && pending.until > Date.now() ? pending.prompt : app.state && app.state.prompts[marks];
      if (prompt) drawPrompt(prompt.kind, prompt.points.map(at), app.colors[marks], dpr);
    }
    if (wordsProposed()) {  // dashed: proposed by the policy from the instruction's words, not in force
      for (const marks of ["place", "target"]) {
        const words = app.state.words[marks];
        if (words) drawPrompt(words.kind, words.points.map(at), app.colors[marks], dpr, true);
      }
    }
    const g = app.gesture;
    const marks = g ? g.marks : app.marks;
    if (g && g.drag && app.tool === "click") drawPrompt("box", [at(g.start), at(g.now)], app.colors[marks], dpr, true);
    if (app.line.length) {
      const points = app.line.concat(g ? [g.now] : []).map(at);
      drawPrompt(points.length > 1 ? "line" : "point", points, app.colors[app.marks], dpr, true);
    }
    drawHud(w, h, dpr);
  }

  function wordsProposed() {  // the policy proposes prompts, and nothing names the target
    const s = app.state;
    return !!(s && s.words && s.words.target && !s.prompts.target && !app.pending.target);
  }

  function drawPath(points, rgb, dpr) {  // the predicted TCP path: the TCP now, then a dot per action
    ctx.save();
    ctx.strokeStyle = ctx.fillStyle = css(rgb);
    ctx.lineWidth = 3 * dpr;
    ctx.beginPath();
    let pen = false;
    for (const p of points) {  // null: behind the camera, the line breaks there
      if (p && pen) ctx.lineTo(p[0], p[1]);
      else if (p) ctx.moveTo(p[0], p[1]);
      pen = !!p;
    }
    ctx.stroke();
    for (const p of points.slice(1)) if (p) ctx.fillRect(p[0] - 3 * dpr, p[1] - 3 * dpr, 6 * dpr, 6 * dpr);
    ctx.restore();
  }

  function drawPrompt(kind, points, rgb, dpr, preview = false) {
    ctx.save();
    ctx.lineWidth = 3 * dpr;  // at least one whole pixel in the prompt's colour, wherever the outline falls
    ctx.strokeStyle = css(rgb);
    if (preview) ctx.setLineDash([6 * dpr, 4 * dpr]);
    if (kind === "point" && preview) {  // a ring: not in force yet
      for (const [x, y] of points) {
        ctx.beginPath();
        ctx.arc(x, y, 7 * dpr, 0, 2 * Math.PI);
        ctx.stroke();
      }
    } else if (kind === "point") {
      for (const [x, y] of points) {
        ctx.beginPath();
        ctx.arc(x, y, 8 * dpr, 0, 2 * Math.PI);  // dark ring outside, the colour inside: the click spot is the colour
        ctx.fillStyle = "rgba(0, 0, 0, 0.8)";
        ctx.fill();
        ctx.beginPath();
        ctx.arc(x, y, 6 * dpr, 0, 2 * Math.PI);
        ctx.fillStyle = css(rgb);
        ctx.fill();
      }
    } else if (kind === "box") {
      const [[x0, y0], [x1, y1]] = points;
      ctx.fillStyle = css(rgb, 0.12);
      ctx.fillRect(Math.min(x0, x1), Math.min(y0, y1), Math.abs(x1 - x0), Math.abs(y1 - y0));
      ctx.strokeRect(Math.min(x0, x1), Math.min(y0, y1), Math.abs(x1 - x0), Math.abs(y1 - y0));
    } else {
      ctx.beginPath();
      points.forEach(([x, y], i) => (i ? ctx.lineTo(x, y) : ctx.moveTo(x, y)));
      ctx.stroke();
      ctx.fillStyle = css(rgb);
      for (const [x, y] of points) ctx.fillRect(x - 3 * dpr, y - 3 * dpr, 6 * dpr, 6 * dpr);
    }
    ctx.restore();
  }

  function drawHud(w, h, dpr) {  // gripper, frame age, e-stop: on the image, where the operator looks
    const s = app.state;
    if (!s) return;
    const lines = [];
    const g = s.gripper;
    const word = (v) => (v === null || v === undefined ? "?" : v > 0.5 ? "open" : "closed");
    const parts = [];
    if (g.measured !== null) parts.push(`${word(g.measured)} (${Math.round(g.measured * 100)} %)`);
    if (g.planned !== null) parts.push(`plan: ${word(g.planned)}`);
    if (parts.length) lines.push(`gripper ${parts.join(", ")}`);
    if (s.camera && s.camera.age > 1.0) lines.push(`camera: last frame ${s.camera.age.toFixed(1)} s ago`);
    ctx.save();
    ctx.font = `${13 * dpr}px system-ui, sans-serif`;
    lines.forEach((text, i) => {
      const y = (8 + 18 * i) * dpr;
      ctx.fillStyle = "rgba(0, 0, 0, 0.6)";
      ctx.fillRect(6 * dpr, y, ctx.measureText(text).width + 10 * dpr, 17 * dpr);
      ctx.fillStyle = "#fff";
      ctx.fillText(text, 11 * dpr, y + 13 * dpr);
    });
    if (s.executor && s.executor.state === "e-stop") {
      ctx.strokeStyle = "#ff1744";
      ctx.lineWidth = 8 * dpr;
      ctx.strokeRect(4 * dpr, 4 * dpr, w - 8 * dpr, h - 8 * dpr);
      ctx.font = `bold ${22 * dpr}px system-ui, sans-serif`;
      ctx.fillStyle = "#ff1744";
      ctx.textAlign = "right";
      ctx.fillText("E-STOP", w - 16 * dpr, 36 * dpr);
    }
    ctx.restore();
  }

  // ------------------------------------------------------------------ prompting with the mouse
  function imagePoint(event) {  // client px -> image px of the frame shown
    const rect = view.getBoundingClientRect();
    return [(event.clientX - rect.left) * app.shown.width / rect.width,
      (event.clientY - rect.top) * app.shown.height / rect.height];
  }

  view.addEventListener("pointerdown", (event) => {
    if (event.button !== 0 || !app.shown) return;
    view.setPointerCapture(event.pointerId);
    const p = imagePoint(event);
    app.gesture = { start: p, now: p, screen: [event.clientX, event.clientY], drag: false,
      marks: event.shiftKey ? "place" : app.marks, frame: app.shown.seq };
  });
  view.addEventListener("pointermove", (event) => {
    const g = app.gesture;
    if (!g && !app.line.length) return;
    if (g) {
      g.now = imagePoint(event);
      if (Math.hypot(event.clientX - g.screen[0], event.clientY - g.screen[1]) > DRAG_PX) g.drag = true;
    }
    requestDraw();
  });
  view.addEventListener("pointerup", () => {
    const g = app.gesture;
    app.gesture = null;
    if (!g) return;
    if (app.tool === "line") {
      app.line.push(g.now);
      app.lineFrame = app.lineFrame || g.frame;
      if (g.marks === "place") app.lineMarks = "place";
    } else if (g.drag) sendPrompt("box", [g.start, g.now], g.marks, g.frame);
    else sendPrompt("point", [g.start], g.marks, g.frame);
    requestDraw();
  });
  view.addEventListener("pointercancel", () => { app.gesture = null; requestDraw(); });
  view.addEventListener("dblclick", () => { if (app.tool === "line") finishLine(); });

  function finishLine() {
    if (app.line.length >= 2) sendPrompt("line", app.line, app.lineMarks || app.marks, app.lineFrame);
    else if (app.line.length) say("a line needs two points or more", true);
    dropLine();
  }

  function dropLine() {
    app.line = [];
    app.lineFrame = null;
    app.lineMarks = null;
    requestDraw();
  }

  function sendPrompt(kind, points, marks, frame) {
    const prompt = { kind, marks, points };
    if (send({ type: "prompt", frame, ...prompt })) {
      app.pending[marks] = { prompt, until: Date.now() + PENDING_MS };  // drawn at once
    }
    requestDraw();
  }

  // ------------------------------------------------------------------ what comes back
  function onResult(msg) {
    if (msg.request === "prompt") {
      const marks = msg.prompt ? msg.prompt.marks : null;
      if (msg.ok && marks) app.pending[marks] = { prompt: msg.prompt, until: Date.now() + PENDING_MS };
      else app.pending = {};
      requestDraw();
    }
    if (msg.request !== "estop" || !msg.ok) say(msg.message, !msg.ok);
  }

  function samePrompt(a, b) {
    return a && b && a.kind === b.kind && a.points.length === b.points.length &&
      a.points.every((p, i) => Math.abs(p[0] - b.points[i][0]) < 1e-6 && Math.abs(p[1] - b.points[i][1]) < 1e-6);
  }

  function onState(s) {
    app.state = s;
    for (const marks of Object.keys(app.pending)) {
      if (samePrompt(app.pending[marks].prompt, s.prompts[marks])) delete app.pending[marks];
    }
    showControl(s.control);
    showExecutor(s.executor);
    showStatus(s);
    showInstructions(s.instructions);
    showEpisode(s.episode, s.tasks);
    $("accept-words").hidden = !wordsProposed();
    requestDraw();
  }

  let messageTimer = null;
  function say(text, error = false) {
    const el = $("message");
    el.textContent = text;
    el.className = error ? "error" : "";
    clearTimeout(messageTimer);
    messageTimer = setTimeout(() => { el.textContent = ""; }, 6000);
  }

  function showConnection() {
    const el = $("connection");
    el.textContent = app.connected ? "connected" : "disconnected: reconnecting…";
    el.className = app.connected ? "ok" : "bad";
  }

  function showControl(control) {
    $("control-state").textContent = control.you ? "you operate" :
      control.held ? "watching: another page operates" : "watching: nobody operates";
    $("take-control").hidden = control.you;
  }

  function showExecutor(executor) {
    const el = $("executor-state");
    if (!executor) { el.textContent = "executor: no report"; el.className = "pill"; return; }
    const stale = executor.age > 3 ? ` (no report for ${Math.round(executor.age)} s)` : "";
    const what = { moving: "moving", holding: "holding", "e-stop": "E-STOP latched", fault: "fault", stale: "stale" };
    el.textContent = `executor: ${what[executor.state] || executor.state}` +
      (executor.state === "moving" ? "" : ` — ${executor.detail}`) + stale;
    el.className = `pill ${executor.state}`;
  }

  function showStatus(s) {
    const rows = [];
    const p = s.policy;
    const ms = (sec) => `${(sec * 1e3).toFixed(1)} ms`;
    if (p) {
      const waiting = p.waiting_for ? ` — waiting for ${p.waiting_for}` : "";
      rows.push(["policy", `${p.state}${waiting}`, p.state === "error" ? "bad" : ""]);
      rows.push(["model", `${p.model_id || "?"} (${p.backend || "?"})`]);
      rows.push(["frames", `received ${p.frames_received}, used ${p.frames_used}, dropped ${p.frames_dropped}` +
        (p.frames_lost !== undefined ? `, lost ${p.frames_lost}` : "")]);
      if (p.camera_rate) rows.push(["camera rate", `${p.camera_rate.toFixed(1)} Hz`]);
    } else {
      rows.push(["policy", "no status on pixelvla/status", "warn"]);
    }
    const inf = s.inference;
    rows.push(["inference", inf ? `p50 ${inf.p50_ms.toFixed(1)} ms, p95 ${inf.p95_ms.toFixed(1)} ms (${inf.n} chunks)` :
      p ? `mean ${ms(p.mean_latency)}, p99 ${ms(p.p99_latency)}` : "no chunks yet"]);
    const d = s.display_latency;
    if (d) rows.push(["camera→screen", `p50 ${d.p50_ms.toFixed(0)} ms, p95 ${d.p95_ms.toFixed(0)} ms`]);
    if (s.executor) {
      rows.push(["executor", `${s.executor.state}: ${s.executor.detail}`, s.executor.state === "moving" ? "ok" : "warn"]);
    }
    const errors = [];
    if (s.errors.length) errors.push(`${s.errors[0].source}: ${s.errors[0].text}`);
    if (p && p.last_error) errors.push(`policy: ${p.last_error}`);
    if (s.executor && s.executor.last_rejection) errors.push(`executor: ${s.executor.last_rejection}`);
    rows.push(["last error", errors.length ? errors[0] : "none", errors.length ? "bad" : ""]);
    const body = $("status-table");
    body.replaceChildren(...rows.map(([key, value, cls]) => {
      const tr = document.createElement("tr");
      const k = document.createElement("td");
      const v = document.createElement("td");
      k.textContent = key;
      v.textContent = value;
      if (cls) v.className = cls;
      tr.append(k, v);
      return tr;
    }));
  }

  function showInstructions(list) {
    $("instructions").replaceChildren(...list.map((text) => {
      const li = document.createElement("li");
      li.textContent = text;
      li.title = "use again";
      li.onclick = () => { $("instruction").value = text; $("instruction").focus(); };
      return li;
    }));
  }

  function showEpisode(episode, tasks) {
    $("sim").hidden = !episode;
    if (!episode) return;
    const result = episode.done ? (episode.success ? "success" : "failed") : episode.success ? "success" : "running";
    $("episode").textContent = `${episode.task}, seed ${episode.seed}, step ${episode.step}: ${result}`;
    const select = $("task");
    if (select.options.length !== tasks.length) {
      select.replaceChildren(...tasks.map((t) => new Option(t, t)));
      select.value = episode.task;
      $("seed").value = episode.seed;
    }
  }

  // ------------------------------------------------------------------ controls
  function estop() {
    app.estopAt = performance.timeOrigin + performance.now();  // ms since the epoch (the e-stop test times it)
    if (!send({ type: "estop" })) say("NOT CONNECTED: the e-stop was not sent. Use the robot's own stop.", true);
  }

  $("estop").onclick = estop;
  $("reset-estop").onclick = () => send({ type: "reset_estop" });
  $("take-control").onclick = () => send({ type: "take_control" });
  $("clear").onclick = () => { app.pending = {}; dropLine(); send({ type: "clear" }); };
  $("accept-words").onclick = () => send({ type: "accept_words" });
  $("instruction-form").onsubmit = (event) => {
    event.preventDefault();
    const text = $("instruction").value.trim();
    if (text && send({ type: "instruction", text })) $("instruction").value = "";
  };
  $("sim-form").onsubmit = (event) => {
    event.preventDefault();
    send({ type: "sim_reset", task: $("task").value, seed: Number($("seed").value) });
  };
  $("next-episode").onclick = () => {
    send({ type: "next_episode" });
    if (app.state && app.state.episode) $("seed").value = app.state.episode.seed + 1;
  };
  for (const button of document.querySelectorAll("button.tool")) {
    button.onclick = () => {
      app.tool = button.dataset.tool;
      dropLine();
      document.querySelectorAll("button.tool").forEach((b) => b.classList.toggle("active", b === button));
    };
  }
  for (const button of document.querySelectorAll("button.marks")) {
    button.onclick = () => {
      app.marks = button.dataset.marks;
      document.querySelectorAll("button.marks").forEach((b) => b.classList.toggle("active", b === button));
    };
  }
  document.addEventListener("keydown", (event) => {
    const typing = ["INPUT", "TEXTAREA", "SELECT"].includes(event.target.tagName);
    if (event.code === "Space" && !typing) {
      event.preventDefault();  // also keeps a focused button from being pressed
      estop();
    } else if (event.key === "Enter" && !typing && app.line.length) finishLine();
    else if (event.key === "Escape") { app.gesture = null; dropLine(); }
  });
  new ResizeObserver(requestDraw).observe($("view-wrap"));
  window.addEventListener("resize", requestDraw);

  showConnection();
  connect();
})();
