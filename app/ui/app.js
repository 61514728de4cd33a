// Reel's web page: create videos, follow their progress, watch and manage them.
import { Api, ApiError, FINAL_STATUSES } from "./api.js";

const KEY_STORAGE = "reel.apiKey";
const PAGE_SIZE = 12;
// Used only until GET /v1/models answers (or when no worker has reported its model yet).
const FALLBACK_MODEL = { id: null, sizes: [[64, 64], [112, 64], [64, 112]], seconds: [1, 2, 4], steps: null, guidance: null };
const FORM_FIELDS = ["model", "prompt", "size", "seconds", "seed", "steps", "guidance", "negative_prompt"];
const STATUS_LABELS = {
  queued: "Queued",
  in_progress: "Running",
  completed: "Ready",
  failed: "Failed",
  cancelled: "Cancelled",
};

const $ = (selector, root = document) => root.querySelector(selector);

const state = {
  api: null,
  model: FALLBACK_MODEL, // the model the form is set up for
  models: [],
  cards: new Map(), // id -> {job, el, controller, videoBlob, videoUrl, announced}
  tiles: new Map(), // id -> {job, el, thumbUrl, thumbLoading}
  gallery: { after: null, hasMore: true, loading: false, generation: 0 },
  retryTimer: null,
};

// ---------------------------------------------------------------- helpers

function announce(text) {
  const region = $("#announcer");
  region.textContent = "";
  // A fresh text node after a tick makes screen readers speak repeated messages too.
  setTimeout(() => (region.textContent = text), 50);
}

function sleep(ms, signal) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(resolve, ms);
    signal?.addEventListener("abort", () => {
      clearTimeout(timer);
      reject(new DOMException("Aborted", "AbortError"));
    }, { once: true });
  });
}

function formatDuration(seconds) {
  seconds = Math.max(0, Math.floor(seconds));
  const h = Math.floor(seconds / 3600);
  const m = Math.floor((seconds % 3600) / 60);
  const s = String(seconds % 60).padStart(2, "0");
  return h ? `${h}:${String(m).padStart(2, "0")}:${s}` : `${m}:${s}`;
}

function formatDate(unixSeconds) {
  if (!unixSeconds) return "";
  const date = new Date(unixSeconds * 1000);
  const sameDay = date.toDateString() === new Date().toDateString();
  return sameDay
    ? date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })
    : date.toLocaleDateString([], { month: "short", day: "numeric" });
}

function parseSize(size) {
  const match = /^(\d+)x(\d+)$/.exec(String(size || ""));
  return match ? [Number(match[1]), Number(match[2])] : null;
}

function secondsLabel(seconds) {
  const n = Number(seconds);
  if (n === 0) return "Still image";
  return `${n} second${n === 1 ? "" : "s"}`;
}

function saveBlob(blob, filename) {
  const url = URL.createObjectURL(blob);
  const link = document.createElement("a");
  link.href = url;
  link.download = filename;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}

const EXTENSIONS = { video: "mp4", thumbnail: "webp", spritesheet: "jpg" };

// ---------------------------------------------------------------- API key

function showKeyPanel(message = "", isError = false) {
  $("#key-panel").hidden = false;
  const text = $("#key-message");
  text.textContent = message;
  text.classList.toggle("error", isError);
  $("#api-key").setAttribute("aria-invalid", String(isError));
  $("#forget-key").hidden = !localStorage.getItem(KEY_STORAGE);
}

function lockApp() {
  for (const entry of state.cards.values()) entry.controller?.abort();
  $("#compose").hidden = true;
  $("#jobs-section").hidden = true;
  $("#library-section").hidden = true;
  $("#change-key").hidden = true;
}

function handleUnauthorized() {
  state.api = null;
  lockApp();
  showKeyPanel("The API refused this key (401 Unauthorized). Check the key and enter it again.", true);
  $("#api-key").focus();
}

async function useKey(key, { fromForm = false } = {}) {
  const api = new Api(key);
  $("#key-message").textContent = "Checking the key…";
  $("#key-message").classList.remove("error");
  try {
    await api.listVideos({ limit: 1 });
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) {
      handleUnauthorized();
    } else {
      showKeyPanel(`Could not reach the API: ${error.message}`, true);
    }
    return false;
  }
  localStorage.setItem(KEY_STORAGE, key);
  state.api = api;
  $("#api-key").value = "";
  $("#key-panel").hidden = true;
  $("#key-message").textContent = "";
  $("#compose").hidden = false;
  $("#jobs-section").hidden = false;
  $("#library-section").hidden = false;
  $("#change-key").hidden = false;
  // Cards and tiles of a previous key belong to another tenant.
  for (const id of [...state.cards.keys()]) closeCard(id);
  for (const id of [...state.tiles.keys()]) removeTile(id);
  updateJobsEmpty();
  loadModels();
  resetGallery();
  if (fromForm) {
    announce("API key saved.");
    $("#prompt").focus();
  }
  return true;
}

function setUpKeyPanel() {
  $("#key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const key = $("#api-key").value.trim();
    if (!key) {
      showKeyPanel("Enter an API key.", true);
      $("#api-key").focus();
      return;
    }
    useKey(key, { fromForm: true });
  });
  $("#change-key").addEventListener("click", () => {
    const panel = $("#key-panel");
    if (panel.hidden) {
      showKeyPanel("");
      $("#api-key").focus();
    } else {
      panel.hidden = true;
    }
  });
  $("#forget-key").addEventListener("click", () => {
    localStorage.removeItem(KEY_STORAGE);
    state.api = null;
    lockApp();
    for (const id of [...state.cards.keys()]) closeCard(id);
    for (const id of [...state.tiles.keys()]) removeTile(id);
    showKeyPanel("The key was removed from this browser.");
    $("#api-key").focus();
  });
}

// ---------------------------------------------------------------- models and the form

function normalizeModel(model) {
  if (!model) return FALLBACK_MODEL;
  const defaults = model.defaults || {};
  const sizes = (model.sizes || [])
    .map((size) => {
      if (Array.isArray(size)) return [Number(size[0]), Number(size[1])];
      if (typeof size === "string") return parseSize(size);
      if (size && typeof size === "object") return [Number(size.width), Number(size.height)];
      return null;
    })
    .filter((size) => size && size[0] > 0 && size[1] > 0);
  const seconds = (model.seconds || model.durations || []).map(Number).filter((n) => Number.isFinite(n));
  return {
    id: model.id || model.name || null,
    sizes: sizes.length ? sizes : FALLBACK_MODEL.sizes,
    seconds: seconds.length ? seconds : FALLBACK_MODEL.seconds,
    steps: model.default_steps ?? defaults.steps ?? null,
    guidance: model.default_guidance ?? defaults.guidance ?? null,
    defaultSize: parseSize(model.default_size ?? defaults.size),
    defaultSeconds: model.default_seconds ?? defaults.seconds ?? null,
  };
}

async function loadModels() {
  let models = [];
  try {
    const body = await state.api.models();
    const list = Array.isArray(body) ? body : body.data || body.models || [];
    models = list.map(normalizeModel).filter((model) => model.id);
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) return handleUnauthorized();
    // Without a worker the list may be empty or unavailable: the form still works with the API's defaults.
  }
  state.models = models;
  const select = $("#model");
  select.replaceChildren(
    ...models.map((model) => {
      const option = document.createElement("option");
      option.value = model.id;
      option.textContent = model.id;
      return option;
    }),
  );
  // A choice only when the deployment serves more than one model.
  $("#model-field").hidden = models.length < 2;
  state.model = models[0] || FALLBACK_MODEL;
  renderModel();
}

function chooseModel(id) {
  state.model = state.models.find((model) => model.id === id) || state.model;
  renderModel();
}

function orientationName([w, h]) {
  return w === h ? "Square" : w > h ? "Landscape" : "Portrait";
}

function renderModel() {
  const model = state.model;
  const name = $("#model-name");
  name.hidden = !model.id;
  name.textContent = model.id || "";

  // Square, landscape and portrait first (the model's first size of each shape), then its other sizes.
  const presets = [];
  for (const shape of ["Square", "Landscape", "Portrait"]) {
    const size = model.sizes.find((s) => orientationName(s) === shape);
    if (size) presets.push({ label: shape, size });
  }
  for (const size of model.sizes) {
    if (!presets.some((p) => p.size[0] === size[0] && p.size[1] === size[1])) {
      presets.push({ label: orientationName(size), size });
    }
  }
  const container = $("#size-options");
  const previous = $("input[name=size]:checked", container)?.value;
  container.replaceChildren();
  const wanted = previous || (model.defaultSize ? model.defaultSize.join("x") : presets[0] && presets[0].size.join("x"));
  for (const preset of presets) container.append(sizeOption(preset.label, preset.size.join("x"), preset.size));
  container.append(sizeOption("Custom", "custom", null));
  const match = $(`input[value="${wanted}"]`, container) || $("input", container);
  match.checked = true;
  $("#custom-size").hidden = match.value !== "custom";

  const seconds = $("#seconds");
  const previousSeconds = seconds.value;
  seconds.replaceChildren(
    ...model.seconds.map((n) => {
      const option = document.createElement("option");
      option.value = String(n);
      option.textContent = secondsLabel(n);
      return option;
    }),
  );
  const wantedSeconds = previousSeconds || String(model.defaultSeconds ?? (model.seconds.includes(2) ? 2 : model.seconds[0]));
  if ([...seconds.options].some((o) => o.value === wantedSeconds)) seconds.value = wantedSeconds;

  $("#steps").placeholder = model.steps != null ? `${model.steps} (default)` : "default";
  $("#guidance").placeholder = model.guidance != null ? `${model.guidance} (default)` : "default";
}

function sizeOption(label, value, size) {
  const option = document.createElement("label");
  option.className = "size-option";
  const input = document.createElement("input");
  input.type = "radio";
  input.name = "size";
  input.value = value;
  const shape = document.createElement("span");
  shape.className = "size-shape";
  shape.setAttribute("aria-hidden", "true");
  if (size) {
    const scale = 22 / Math.max(size[0], size[1]);
    shape.style.width = `${Math.round(size[0] * scale)}px`;
    shape.style.height = `${Math.round(size[1] * scale)}px`;
  } else {
    shape.classList.add("custom");
  }
  const text = document.createElement("span");
  text.className = "size-text";
  const name = document.createElement("span");
  name.className = "size-name";
  name.textContent = label;
  text.append(name);
  if (size) {
    const dims = document.createElement("span");
    dims.className = "size-dims";
    dims.textContent = `${size[0]}×${size[1]}`;
    text.append(dims);
  }
  option.append(input, shape, text);
  return option;
}

function fieldForParam(param) {
  if (!param) return null;
  // FastAPI-style locations ("body.steps", "body -> steps") name the field last.
  const name = String(param).split(/[.\s>-]+/).filter(Boolean).pop();
  if (name === "width" || name === "height") return "size";
  if (name === "negative") return "negative_prompt";
  return FORM_FIELDS.includes(name) ? name : FORM_FIELDS.find((f) => String(param).includes(f)) || null;
}

function controlFor(field) {
  if (field === "size") {
    const checked = $("#size-options input:checked");
    return checked && checked.value === "custom" ? $("#width") : checked;
  }
  return document.getElementById(field);
}

function clearFieldError(field) {
  const message = document.getElementById(`${field}-error`);
  if (message) message.textContent = "";
  const control = field === "size" ? null : document.getElementById(field);
  control?.removeAttribute("aria-invalid");
  if (field === "size") {
    for (const input of document.querySelectorAll("#size-options input, #width, #height")) input.removeAttribute("aria-invalid");
  }
}

function clearFormErrors() {
  for (const field of FORM_FIELDS) clearFieldError(field);
  $("#form-message").textContent = "";
}

function showFieldError(field, message) {
  document.getElementById(`${field}-error`).textContent = message;
  const control = controlFor(field);
  control?.setAttribute("aria-invalid", "true");
  control?.focus();
}

function readForm() {
  const fields = { prompt: $("#prompt").value };
  const size = $("#size-options input:checked")?.value;
  if (size === "custom") fields.size = `${$("#width").value}x${$("#height").value}`;
  else if (size) fields.size = size;
  if ($("#seconds").value !== "") fields.seconds = $("#seconds").value;
  for (const name of ["seed", "steps", "guidance"]) {
    const raw = $(`#${name}`).value;
    // A number input's value is "" for text it cannot parse: send what was typed so the API can name it.
    const typed = $(`#${name}`).validity.badInput;
    if (raw !== "") fields[name] = Number(raw);
    else if (typed) fields[name] = "invalid";
  }
  // The placeholders promise the model's own defaults (GET /v1/models): ask for exactly those.
  if (fields.steps === undefined && state.model.steps != null) fields.steps = state.model.steps;
  if (fields.guidance === undefined && state.model.guidance != null) fields.guidance = state.model.guidance;
  const negative = $("#negative_prompt").value.trim();
  if (negative) fields.negative_prompt = negative;
  if (state.model.id) fields.model = state.model.id;
  return fields;
}

function startRetryCountdown(seconds) {
  const button = $("#create-button");
  const message = $("#form-message");
  clearInterval(state.retryTimer);
  let left = seconds;
  const tick = () => {
    if (left <= 0) {
      clearInterval(state.retryTimer);
      state.retryTimer = null;
      button.disabled = false;
      button.textContent = "Create video";
      message.textContent = "You can try again now.";
      return;
    }
    button.disabled = true;
    button.textContent = `Try again in ${left} s`;
    left -= 1;
  };
  tick();
  state.retryTimer = setInterval(tick, 1000);
}

function showCreateError(error) {
  if (!(error instanceof ApiError)) {
    $("#form-message").textContent = `Could not reach the API: ${error.message}`;
    return;
  }
  if (error.status === 401) return handleUnauthorized();
  if (error.status === 429) {
    const wait = error.retryAfter;
    $("#form-message").textContent = wait != null
      ? `Too many videos are waiting in the queue. Try again in ${wait} second${wait === 1 ? "" : "s"}.`
      : `Too many videos are waiting in the queue. Try again shortly. (${error.message})`;
    if (wait) startRetryCountdown(wait);
    return;
  }
  const field = fieldForParam(error.param);
  // A field that is not on screen (the model choice with one model) cannot hold its message.
  if (field && !document.getElementById(`${field}-error`).closest("[hidden]")) showFieldError(field, error.message);
  else $("#form-message").textContent = error.message;
}

async function submitForm() {
  if (!state.api) return;
  const button = $("#create-button");
  if (button.disabled) return;
  clearFormErrors();
  const fields = readForm();
  if (!fields.prompt.trim()) {
    showFieldError("prompt", "Describe the video you want.");
    return;
  }
  button.disabled = true;
  button.textContent = "Creating…";
  try {
    const job = await state.api.createVideo(fields);
    addTile(job, { prepend: true });
    openCard(job);
    announce(`Video queued: ${job.prompt}`);
  } catch (error) {
    showCreateError(error);
  } finally {
    // A 429 leaves the button to its countdown.
    if (!state.retryTimer) {
      button.disabled = false;
      button.textContent = "Create video";
    }
  }
}

function setUpForm() {
  const form = $("#create-form");
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    submitForm();
  });
  $("#prompt").addEventListener("keydown", (event) => {
    // Enter (or Ctrl/Cmd+Enter) submits; Shift+Enter is a new line; never while an IME is composing.
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      form.requestSubmit();
    }
  });
  form.addEventListener("input", (event) => {
    const target = event.target;
    const field = target.name === "width" || target.name === "height" || target.name === "size" ? "size" : target.id;
    if (FORM_FIELDS.includes(field)) clearFieldError(field);
    if (target.name === "size") $("#custom-size").hidden = target.value !== "custom";
  });
  form.addEventListener("change", (event) => {
    if (event.target.id === "model") chooseModel(event.target.value);
    if (event.target.name === "size") $("#custom-size").hidden = event.target.value !== "custom";
  });
}

// ---------------------------------------------------------------- job cards

function updateJobsEmpty() {
  $("#jobs-empty").hidden = state.cards.size > 0;
}

function openCard(job, { focus = false } = {}) {
  let entry = state.cards.get(job.id);
  if (entry) {
    applyUpdate(entry, job);
    if (focus) {
      entry.el.scrollIntoView({ block: "nearest", behavior: "smooth" });
      entry.el.focus({ preventScroll: true });
    }
    return entry;
  }
  const el = $("#card-template").content.firstElementChild.cloneNode(true);
  entry = { job: { ...job }, el, controller: null, videoBlob: null, videoUrl: null, announced: null, lastQuarter: 0 };
  state.cards.set(job.id, entry);
  el.dataset.id = job.id;
  const titleId = `title-${job.id}`;
  $(".card-prompt", el).id = titleId;
  el.setAttribute("aria-labelledby", titleId);
  const remixInput = $(".remix-prompt", el);
  remixInput.id = `remix-${job.id}`;
  $(".remix-label", el).htmlFor = remixInput.id;
  $(".remix-error", el).id = `remix-error-${job.id}`;
  $(".remix-hint", el).id = `remix-hint-${job.id}`;
  remixInput.setAttribute("aria-describedby", `remix-hint-${job.id} remix-error-${job.id}`);
  $(".progress", el).setAttribute("aria-label", "Progress");
  $(".remove", el).setAttribute("aria-label", "Delete this video");
  $(".remove", el).title = "Delete";
  $(".close", el).title = "Close (the video stays in the library)";

  $(".cancel", el).addEventListener("click", () => cancelJob(entry));
  $(".remove", el).addEventListener("click", () => deleteJob(entry));
  $(".close", el).addEventListener("click", () => {
    const tile = state.tiles.get(job.id);
    closeCard(job.id);
    (tile ? $(".tile", tile.el) : $("#prompt")).focus();
  });
  $(".reuse-seed", el).addEventListener("click", () => reuseSeed(entry));
  for (const button of el.querySelectorAll(".download")) {
    button.addEventListener("click", () => download(entry, button.dataset.variant, button));
  }
  $(".remix", el).addEventListener("submit", (event) => {
    event.preventDefault();
    remixJob(entry);
  });

  $("#cards").prepend(el);
  updateJobsEmpty();
  render(entry);
  if (FINAL_STATUSES.has(entry.job.status)) {
    if (entry.job.status === "completed") loadVideo(entry);
    // The record may be older than the list page it came from: refresh it once.
    refreshOnce(entry);
  } else {
    watch(entry);
  }
  if (focus) {
    el.scrollIntoView({ block: "nearest", behavior: "smooth" });
    el.focus({ preventScroll: true });
  }
  return entry;
}

function closeCard(id) {
  const entry = state.cards.get(id);
  if (!entry) return;
  entry.controller?.abort();
  if (entry.videoUrl) URL.revokeObjectURL(entry.videoUrl);
  entry.el.remove();
  state.cards.delete(id);
  updateJobsEmpty();
}

/** Merge an API answer or an event's data into the card's job and redraw. */
function applyUpdate(entry, data) {
  if (!data || typeof data !== "object") return;
  if (data.data && typeof data.data === "object" && !Array.isArray(data.data)) data = data.data;
  if (data.id && data.id !== entry.job.id) return;
  const wasFinal = FINAL_STATUSES.has(entry.job.status);
  // A late progress event must not undo a final status.
  if (wasFinal && data.status && !FINAL_STATUSES.has(data.status)) return;
  if (wasFinal && !data.status && data.progress != null) return;
  const before = entry.job.status;
  Object.assign(entry.job, data);
  if (entry.job.status === "completed") entry.job.progress = 100;
  render(entry);
  updateTile(entry.job);
  if (before !== "completed" && entry.job.status === "completed") loadVideo(entry);
}

function statusText(job) {
  switch (job.status) {
    case "queued":
      return job.queue_position != null ? `Position ${job.queue_position} in the queue` : "Waiting for a worker";
    case "in_progress":
      return `${Math.round(job.progress || 0)}%`;
    case "completed":
      return "";
    case "failed":
      return "";
    case "cancelled":
      return "This job was cancelled.";
    default:
      return job.status || "";
  }
}

function metaText(job) {
  const parts = [];
  if (job.size) parts.push(job.size.replace("x", "×"));
  if (job.seconds != null) parts.push(Number(job.seconds) === 0 ? "still" : `${job.seconds} s`);
  if (job.seed != null) parts.push(`seed ${job.seed}`);
  if (job.steps != null) parts.push(`${job.steps} step${Number(job.steps) === 1 ? "" : "s"}`);
  if (job.guidance != null) parts.push(`guidance ${job.guidance}`);
  return parts.join(" · ");
}

function render(entry) {
  const { job, el } = entry;
  const status = job.status || "queued";
  const final = FINAL_STATUSES.has(status);
  el.dataset.status = status;
  el.dataset.progress = String(Math.round(Number(job.progress) || 0));
  $(".card-prompt", el).textContent = job.prompt || "(no prompt)";
  let meta = metaText(job);
  if (job.negative_prompt) meta += ` · not: ${job.negative_prompt}`;
  if (job.remixed_from_video_id) meta += ` · remix of ${job.remixed_from_video_id}`;
  $(".card-meta", el).textContent = meta;
  const badge = $(".badge", el);
  badge.textContent = STATUS_LABELS[status] || status;
  badge.dataset.status = status;
  $(".status-text", el).textContent = statusText(job);

  const progress = $(".progress", el);
  progress.hidden = final;
  if (status === "queued") progress.removeAttribute("value"); // indeterminate while waiting
  else progress.value = Math.max(0, Math.min(100, Number(job.progress) || 0));
  progress.setAttribute("aria-valuetext", status === "queued" ? "waiting" : `${Math.round(job.progress || 0)} percent`);

  const placeholder = $(".placeholder", el);
  const size = parseSize(job.size);
  if (size) $(".card-media", el).style.aspectRatio = `${size[0]} / ${size[1]}`;
  if (!entry.videoUrl) {
    placeholder.hidden = false;
    placeholder.dataset.status = status;
    const text = $(".placeholder-text", el);
    if (status === "in_progress") text.textContent = `${Math.round(job.progress || 0)}%`;
    else if (status === "queued") text.textContent = "Queued";
    else if (status === "completed") text.textContent = entry.videoError || "Loading video…";
    else text.textContent = STATUS_LABELS[status];
  }

  const error = $(".card-error", el);
  error.hidden = status !== "failed";
  if (status === "failed") {
    const detail = job.error || {};
    error.textContent = detail.message || "The job failed.";
    if (detail.code) error.textContent += ` (${detail.code})`;
  }

  const focused = el.contains(document.activeElement) ? document.activeElement : null;
  $(".cancel", el).hidden = final;
  $(".downloads", el).hidden = status !== "completed";
  $(".remix", el).hidden = status !== "completed";
  $(".reuse-seed", el).hidden = status !== "completed" || job.seed == null;
  $(".remove", el).hidden = !final;
  // Buttons that vanish under the keyboard focus hand it to the card.
  if (focused && focused.closest("[hidden]")) el.focus();

  renderElapsed(entry);
  announceStatus(entry);
}

function renderElapsed(entry) {
  const { job, el } = entry;
  const out = $(".elapsed", el);
  if (!job.created_at) {
    out.textContent = "";
    return;
  }
  let end = Date.now() / 1000;
  if (FINAL_STATUSES.has(job.status)) {
    // A cancelled job may have no completed_at: freeze the clock when the page saw it end.
    entry.finishedAt ??= job.completed_at || end;
    end = job.completed_at || entry.finishedAt;
  }
  const took = formatDuration(end - job.created_at);
  out.textContent = job.status === "completed" ? `took ${took}` : took;
}

function announceStatus(entry) {
  const { job, el } = entry;
  const live = $(".live", el);
  let message = null;
  if (job.status !== entry.announced) {
    entry.announced = job.status;
    message = {
      queued: "Queued.",
      in_progress: "Generating.",
      completed: "Video ready.",
      failed: `Failed: ${job.error?.message || "unknown error"}.`,
      cancelled: "Cancelled.",
    }[job.status];
  } else if (job.status === "in_progress") {
    // Every quarter, not every sampler step: a screen reader cannot keep up with more.
    const quarter = Math.floor((Number(job.progress) || 0) / 25);
    if (quarter > entry.lastQuarter && quarter < 4) message = `${quarter * 25} percent.`;
    entry.lastQuarter = Math.max(entry.lastQuarter, quarter);
  }
  if (message) live.textContent = message;
}

async function refreshOnce(entry) {
  try {
    const { body } = await state.api.getVideo(entry.job.id);
    applyUpdate(entry, body);
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) handleUnauthorized();
    if (error instanceof ApiError && error.status === 404) removeEverywhere(entry.job.id);
  }
}

/** Follow a running job: the SSE stream first, polling when the stream is unavailable or ends early. */
async function watch(entry) {
  const controller = new AbortController();
  entry.controller = controller;
  const { signal } = controller;
  const id = entry.job.id;
  try {
    for await (const event of state.api.events(id, signal)) {
      let data = null;
      try {
        data = JSON.parse(event.data);
      } catch {
        continue; // keep-alive text or a format this page does not know
      }
      if (typeof data === "number") data = { progress: data };
      if (data && !data.status && /^(video\.)?(queued|in_progress|started|completed|failed|cancelled)$/.test(event.event)) {
        const name = event.event.replace(/^video\./, "");
        data = { ...data, status: name === "started" ? "in_progress" : name };
      }
      applyUpdate(entry, data);
      if (FINAL_STATUSES.has(entry.job.status)) break;
    }
  } catch (error) {
    if (signal.aborted) return;
    if (error instanceof ApiError && error.status === 401) return handleUnauthorized();
    if (error instanceof ApiError && error.status === 404) return removeEverywhere(id);
  }
  await poll(entry, signal);
}

async function poll(entry, signal) {
  let failures = 0;
  while (!signal.aborted) {
    try {
      const { body, headers } = await state.api.getVideo(entry.job.id, signal);
      failures = 0;
      applyUpdate(entry, body);
      if (FINAL_STATUSES.has(entry.job.status)) return;
      const after = Number(headers.get("openai-poll-after-ms")) || 1000;
      await sleep(Math.min(5000, Math.max(250, after)), signal);
    } catch (error) {
      if (signal.aborted) return;
      if (error instanceof ApiError && error.status === 401) return handleUnauthorized();
      if (error instanceof ApiError && error.status === 404) return removeEverywhere(entry.job.id);
      failures += 1;
      await sleep(Math.min(10_000, 500 * 2 ** failures), signal).catch(() => {});
    }
  }
}

async function loadVideo(entry) {
  if (entry.videoUrl || entry.videoLoading) return;
  entry.videoLoading = true;
  entry.videoError = null;
  try {
    const blob = await state.api.content(entry.job.id, "video");
    if (!state.cards.has(entry.job.id)) return;
    entry.videoBlob = blob;
    entry.videoUrl = URL.createObjectURL(blob);
    const video = document.createElement("video");
    video.muted = true;
    video.loop = true;
    video.autoplay = true;
    video.playsInline = true;
    video.setAttribute("playsinline", "");
    video.setAttribute("aria-label", `Video: ${entry.job.prompt}`);
    video.src = entry.videoUrl;
    const toggle = document.createElement("button");
    toggle.type = "button";
    toggle.className = "play-toggle";
    const setToggle = () => {
      toggle.setAttribute("aria-label", video.paused ? "Play" : "Pause");
      toggle.innerHTML = video.paused
        ? '<svg viewBox="0 0 24 24" aria-hidden="true"><path d="M8 5l11 7-11 7z"/></svg>'
        : '<svg viewBox="0 0 24 24" aria-hidden="true"><path d="M7 5h4v14H7zM13 5h4v14h-4z"/></svg>';
    };
    toggle.addEventListener("click", () => (video.paused ? video.play() : video.pause()));
    video.addEventListener("play", setToggle);
    video.addEventListener("pause", setToggle);
    setToggle();
    const media = $(".card-media", entry.el);
    $(".placeholder", entry.el).hidden = true;
    media.append(video, toggle);
    video.play().catch(() => setToggle());
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) return handleUnauthorized();
    entry.videoError = error instanceof ApiError && error.status === 404
      ? "The video is no longer available."
      : `Could not load the video: ${error.message}`;
    render(entry);
  } finally {
    entry.videoLoading = false;
  }
}

async function download(entry, variant, button) {
  const label = button.textContent;
  button.disabled = true;
  button.textContent = "…";
  try {
    const blob = variant === "video" && entry.videoBlob ? entry.videoBlob : await state.api.content(entry.job.id, variant);
    saveBlob(blob, `${entry.job.id}${variant === "video" ? "" : `-${variant}`}.${EXTENSIONS[variant]}`);
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) return handleUnauthorized();
    announce(`Download failed: ${error.message}`);
    $(".card-error", entry.el).hidden = false;
    $(".card-error", entry.el).textContent = `Download failed: ${error.message}`;
  } finally {
    button.disabled = false;
    button.textContent = label;
  }
}

async function cancelJob(entry) {
  const button = $(".cancel", entry.el);
  button.disabled = true;
  try {
    const job = await state.api.cancel(entry.job.id);
    applyUpdate(entry, job);
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) return handleUnauthorized();
    $(".card-error", entry.el).hidden = false;
    $(".card-error", entry.el).textContent = `Could not cancel: ${error.message}`;
  } finally {
    button.disabled = false;
  }
}

async function deleteJob(entry) {
  if (!window.confirm(`Delete this video and its files?\n\n“${entry.job.prompt}”`)) return;
  try {
    await state.api.remove(entry.job.id);
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) return handleUnauthorized();
    if (!(error instanceof ApiError && error.status === 404)) {
      $(".card-error", entry.el).hidden = false;
      $(".card-error", entry.el).textContent = `Could not delete: ${error.message}`;
      return;
    }
  }
  removeEverywhere(entry.job.id);
  announce("Video deleted.");
  $("#prompt").focus();
}

function removeEverywhere(id) {
  closeCard(id);
  removeTile(id);
}

async function remixJob(entry) {
  const input = $(".remix-prompt", entry.el);
  const error = $(".remix-error", entry.el);
  error.textContent = "";
  input.removeAttribute("aria-invalid");
  if (!input.value.trim()) {
    error.textContent = "Describe what should change.";
    input.setAttribute("aria-invalid", "true");
    input.focus();
    return;
  }
  try {
    const job = await state.api.remix(entry.job.id, input.value);
    input.value = "";
    addTile(job, { prepend: true });
    openCard(job, { focus: true });
    announce(`Remix queued: ${job.prompt}`);
  } catch (failure) {
    if (failure instanceof ApiError && failure.status === 401) return handleUnauthorized();
    if (failure instanceof ApiError && failure.status === 429 && failure.retryAfter != null) {
      error.textContent = `Too many videos are waiting in the queue. Try again in ${failure.retryAfter} s.`;
    } else {
      error.textContent = failure.message;
    }
    input.setAttribute("aria-invalid", "true");
    input.focus();
  }
}

function reuseSeed(entry) {
  $("#seed").value = String(entry.job.seed);
  clearFieldError("seed");
  announce(`Seed ${entry.job.seed} set for the next video.`);
  $("#prompt").focus();
}

// ---------------------------------------------------------------- library (gallery)

const thumbObserver = new IntersectionObserver(
  (entries) => {
    for (const item of entries) {
      if (!item.isIntersecting) continue;
      thumbObserver.unobserve(item.target);
      const tile = state.tiles.get(item.target.dataset.id);
      if (tile) loadThumb(tile);
    }
  },
  { rootMargin: "200px" },
);

const moreObserver = new IntersectionObserver(
  (entries) => {
    if (entries.some((e) => e.isIntersecting)) loadMore();
  },
  { rootMargin: "400px" },
);

function resetGallery() {
  state.gallery = { after: null, hasMore: true, loading: false, generation: state.gallery.generation + 1 };
  $("#gallery").replaceChildren();
  $("#gallery-message").textContent = "";
  moreObserver.observe($("#load-more"));
  loadMore();
}

async function loadMore() {
  const gallery = state.gallery;
  if (!state.api || gallery.loading || !gallery.hasMore) return;
  gallery.loading = true;
  const generation = gallery.generation;
  $("#gallery-message").textContent = "Loading…";
  try {
    const page = await state.api.listVideos({ after: gallery.after, limit: PAGE_SIZE });
    if (generation !== state.gallery.generation) return;
    const videos = page.data || [];
    for (const job of videos) addTile(job);
    gallery.after = page.last_id || (videos.length ? videos[videos.length - 1].id : gallery.after);
    gallery.hasMore = Boolean(page.has_more) && videos.length > 0;
    $("#gallery-message").textContent = "";
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) return handleUnauthorized();
    $("#gallery-message").textContent = `Could not load the library: ${error.message}`;
  } finally {
    if (generation === state.gallery.generation) {
      gallery.loading = false;
      $("#load-more").hidden = !gallery.hasMore;
      $("#gallery-empty").hidden = state.tiles.size > 0 || gallery.hasMore;
      // The observer fires on changes only: if the end of the list is still in view, keep going.
      if (gallery.hasMore && isNearViewport($("#load-more"))) setTimeout(loadMore, 0);
    }
  }
}

function isNearViewport(element) {
  if (element.hidden) return false;
  const rect = element.getBoundingClientRect();
  return rect.top < window.innerHeight + 400 && rect.bottom > -400;
}

function addTile(job, { prepend = false } = {}) {
  if (state.tiles.has(job.id)) return updateTile(job);
  const li = document.createElement("li");
  li.className = "gallery-item";
  li.dataset.id = job.id;
  const button = document.createElement("button");
  button.type = "button";
  button.className = "tile";
  const thumb = document.createElement("span");
  thumb.className = "tile-thumb";
  const size = parseSize(job.size);
  if (size) thumb.style.setProperty("--ratio", `${size[0]} / ${size[1]}`);
  const status = document.createElement("span");
  status.className = "badge tile-status";
  const prompt = document.createElement("span");
  prompt.className = "tile-prompt";
  const meta = document.createElement("span");
  meta.className = "tile-meta";
  thumb.append(status);
  button.append(thumb, prompt, meta);
  button.addEventListener("click", () => openCard(tile.job, { focus: true }));
  li.append(button);
  const tile = { job: { ...job }, el: li, thumbUrl: null, thumbLoading: false };
  state.tiles.set(job.id, tile);
  const gallery = $("#gallery");
  if (prepend) gallery.prepend(li);
  else gallery.append(li);
  $("#gallery-empty").hidden = true;
  renderTile(tile);
  return tile;
}

function updateTile(job) {
  const tile = state.tiles.get(job.id);
  if (!tile) return;
  Object.assign(tile.job, job);
  renderTile(tile);
}

function renderTile(tile) {
  const { job, el } = tile;
  const status = job.status || "queued";
  const badge = $(".tile-status", el);
  badge.dataset.status = status;
  badge.textContent = status === "in_progress" ? `${Math.round(job.progress || 0)}%` : STATUS_LABELS[status] || status;
  badge.hidden = status === "completed";
  $(".tile-prompt", el).textContent = job.prompt || "(no prompt)";
  const meta = [job.size ? job.size.replace("x", "×") : null, formatDate(job.created_at)].filter(Boolean);
  $(".tile-meta", el).textContent = meta.join(" · ");
  if (status === "completed" && !tile.thumbUrl && !tile.thumbLoading) thumbObserver.observe(el);
}

async function loadThumb(tile) {
  if (tile.thumbUrl || tile.thumbLoading) return;
  tile.thumbLoading = true;
  try {
    const blob = await state.api.content(tile.job.id, "thumbnail");
    if (!state.tiles.has(tile.job.id)) return;
    tile.thumbUrl = URL.createObjectURL(blob);
    const img = document.createElement("img");
    img.alt = "";
    img.src = tile.thumbUrl;
    $(".tile-thumb", tile.el).prepend(img);
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) return handleUnauthorized();
    $(".tile-thumb", tile.el).classList.add("missing");
  } finally {
    tile.thumbLoading = false;
  }
}

/** Library tiles of unfinished jobs that no card follows: ask for a few of them now and then. */
async function refreshUnfinishedTiles() {
  if (!state.api || document.hidden) return;
  const stale = [...state.tiles.values()]
    .filter((tile) => !FINAL_STATUSES.has(tile.job.status) && !state.cards.has(tile.job.id))
    .slice(0, 6);
  for (const tile of stale) {
    try {
      const { body } = await state.api.getVideo(tile.job.id);
      updateTile(body);
    } catch (error) {
      if (error instanceof ApiError && error.status === 401) return handleUnauthorized();
      if (error instanceof ApiError && error.status === 404) removeTile(tile.job.id);
      return;
    }
  }
}

function removeTile(id) {
  const tile = state.tiles.get(id);
  if (!tile) return;
  thumbObserver.unobserve(tile.el);
  if (tile.thumbUrl) URL.revokeObjectURL(tile.thumbUrl);
  tile.el.remove();
  state.tiles.delete(id);
  $("#gallery-empty").hidden = state.tiles.size > 0 || state.gallery.hasMore;
}

// ---------------------------------------------------------------- start

function start() {
  setUpKeyPanel();
  setUpForm();
  renderModel();
  $("#load-more").addEventListener("click", loadMore);
  setInterval(() => {
    for (const entry of state.cards.values()) {
      if (!FINAL_STATUSES.has(entry.job.status)) renderElapsed(entry);
    }
  }, 1000);
  setInterval(refreshUnfinishedTiles, 4000);
  const key = localStorage.getItem(KEY_STORAGE);
  if (key) {
    useKey(key).then((ok) => {
      if (!ok) $("#api-key").focus();
    });
  } else {
    showKeyPanel("");
    $("#api-key").focus();
  }
}

start();
