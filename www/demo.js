// The demo: paint a mask over an image, prompt, and run `fal-ai/inpaint` (or, with a scheduler
// chosen, `fal-ai/lora/inpaint`) on this device through @fresco/client's local mode, or on the
// server through its proxy route. `cargo xtask demo` serves this directory with the npm package in
// ./pkg, the built-in tiny model in Hugging Face layout under ./hub, and ./demo.json (where the
// server keeps that model, for the remote mode).
import { createFalClient, localModelCache } from "./pkg/index.js";

const $ = (id) => document.getElementById(id);
const demo = await fetch("demo.json").then((r) => (r.ok ? r.json() : {})).catch(() => ({}));

// ---------------------------------------------------------------------------------------------
// Clients: one per place a call can run (a local client keeps its worker and loaded model).

const remote = createFalClient({ proxyUrl: "/api/fal/proxy" });
const localClients = new Map();
const localClient = (hubUrl) => {
  if (!localClients.has(hubUrl)) localClients.set(hubUrl, createFalClient({ local: { hubUrl } }));
  return localClients.get(hubUrl);
};

// WebGPU: without it, only the server can run the call.
const webgpu = await (async () => {
  if (!navigator.gpu) return "this browser has no WebGPU (navigator.gpu is missing)";
  try {
    const adapter = await navigator.gpu.requestAdapter();
    return adapter ? null : "this browser found no WebGPU adapter";
  } catch (e) {
    return `WebGPU failed: ${e.message}`;
  }
})();
if (webgpu) {
  const note = $("gpu-note");
  note.hidden = false;
  note.textContent = `This device cannot run the model: ${webgpu}. Runs go to the server instead; Chrome or Edge 113+ (or Safari 26+) run it here.`;
  const local = document.querySelector('input[name="where"][value="local"]');
  local.disabled = true;
  document.querySelector('input[name="where"][value="remote"]').checked = true;
}

// ---------------------------------------------------------------------------------------------
// Image and mask

const picture = $("picture");
const mask = $("mask");
const stage = $("stage");
const MAX_SIDE = 1024;
let imageBlob = null;
let erasing = false;

function setImage(source, width, height) {
  const scale = Math.min(1, MAX_SIDE / Math.max(width, height));
  const w = Math.max(8, Math.round(width * scale));
  const h = Math.max(8, Math.round(height * scale));
  for (const c of [picture, mask]) {
    c.width = w;
    c.height = h;
  }
  picture.getContext("2d").drawImage(source, 0, 0, w, h);
  stage.dataset.empty = "false";
  stage.classList.toggle("small", Math.max(w, h) < 256);
  picture.toBlob((b) => (imageBlob = b), "image/png");
}

async function openFile(file) {
  if (!file || !file.type.startsWith("image/")) return say(`${file?.name ?? "that"} is not an image`, true);
  try {
    const bitmap = await createImageBitmap(file);
    setImage(bitmap, bitmap.width, bitmap.height);
    say(`${file.name}: ${bitmap.width}×${bitmap.height}`);
  } catch (e) {
    say(`could not read ${file.name}: ${e.message}`, true);
  }
}

/** A landscape drawn here, so the demo needs no picture to start. */
function sample() {
  const c = new OffscreenCanvas(512, 512);
  const g = c.getContext("2d");
  const sky = g.createLinearGradient(0, 0, 0, 330);
  sky.addColorStop(0, "#7aa7d8");
  sky.addColorStop(1, "#f4d6a8");
  g.fillStyle = sky;
  g.fillRect(0, 0, 512, 512);
  g.fillStyle = "#fff3c4";
  g.beginPath();
  g.arc(380, 150, 42, 0, Math.PI * 2);
  g.fill();
  const hill = (y, color, phase) => {
    g.fillStyle = color;
    g.beginPath();
    g.moveTo(0, 512);
    for (let x = 0; x <= 512; x += 8) g.lineTo(x, y + 26 * Math.sin(x / 70 + phase));
    g.lineTo(512, 512);
    g.fill();
  };
  hill(300, "#5c7f4f", 0.5);
  hill(360, "#3f6b3a", 2.1);
  g.fillStyle = "#f7f7f2";
  g.fillRect(0, 430, 512, 82);
  setImage(c, 512, 512);
  say("sample landscape: paint over the part to replace");
}

$("file").addEventListener("change", (e) => openFile(e.target.files[0]));
$("sample").addEventListener("click", sample);
stage.addEventListener("dragover", (e) => {
  e.preventDefault();
  stage.classList.add("dragging");
});
stage.addEventListener("dragleave", () => stage.classList.remove("dragging"));
stage.addEventListener("drop", (e) => {
  e.preventDefault();
  stage.classList.remove("dragging");
  openFile(e.dataTransfer.files[0]);
});

// The mask is painted in opaque red on its canvas (shown at half opacity over the image); what
// is painted becomes white in the mask the model gets, the rest black.
const brush = $("brush");
let last = null;
const point = (e) => {
  const r = mask.getBoundingClientRect();
  return { x: ((e.clientX - r.left) / r.width) * mask.width, y: ((e.clientY - r.top) / r.height) * mask.height };
};
function stroke(from, to) {
  const g = mask.getContext("2d");
  const scale = mask.width / mask.getBoundingClientRect().width;
  g.globalCompositeOperation = erasing ? "destination-out" : "source-over";
  g.strokeStyle = g.fillStyle = "#ff2a2a";
  g.lineWidth = Number(brush.value) * scale;
  g.lineCap = g.lineJoin = "round";
  g.beginPath();
  g.moveTo(from.x, from.y);
  g.lineTo(to.x, to.y);
  g.stroke();
}
mask.addEventListener("pointerdown", (e) => {
  if (stage.dataset.empty === "true") return;
  mask.setPointerCapture(e.pointerId);
  last = point(e);
  stroke(last, last);
});
mask.addEventListener("pointermove", (e) => {
  if (!last) return;
  const p = point(e);
  stroke(last, p);
  last = p;
});
for (const end of ["pointerup", "pointercancel"]) mask.addEventListener(end, () => (last = null));
$("eraser").addEventListener("click", (e) => {
  erasing = !erasing;
  e.target.setAttribute("aria-pressed", String(erasing));
});
$("clear").addEventListener("click", () => mask.getContext("2d").clearRect(0, 0, mask.width, mask.height));
$("invert").addEventListener("click", () => {
  const g = mask.getContext("2d");
  const img = g.getImageData(0, 0, mask.width, mask.height);
  for (let i = 0; i < img.data.length; i += 4) {
    const painted = img.data[i + 3] > 127;
    img.data.set(painted ? [0, 0, 0, 0] : [255, 42, 42, 255], i);
  }
  g.putImageData(img, 0, 0);
});

/** The mask as the model wants it: white where painted, black elsewhere; null if nothing is. */
async function maskBlob() {
  const img = mask.getContext("2d").getImageData(0, 0, mask.width, mask.height);
  let any = false;
  for (let i = 0; i < img.data.length; i += 4) {
    const v = img.data[i + 3] > 127 ? 255 : 0;
    any ||= v > 0;
    img.data.set([v, v, v, 255], i);
  }
  if (!any) return null;
  const c = new OffscreenCanvas(mask.width, mask.height);
  c.getContext("2d").putImageData(img, 0, 0);
  return c.convertToBlob({ type: "image/png" });
}

// ---------------------------------------------------------------------------------------------
// Running

const logEl = $("log");
function say(text, error = false) {
  $("status").textContent = text;
  $("status").classList.toggle("error", error);
}
$("model").addEventListener("change", (e) => ($("hf-row").hidden = e.target.value !== "hf"));

function show(bar, label, value, max, text) {
  $(bar).parentElement.hidden = false;
  $(bar).max = max || 1;
  $(bar).value = value;
  $(label).textContent = text;
}

let controller = null;

async function inpaint() {
  if (!imageBlob) return say("open an image (or take the sample) first", true);
  const maskImage = await maskBlob();
  if (!maskImage) return say("paint the mask first: the part of the image to replace", true);
  const where = document.querySelector('input[name="where"]:checked').value;
  const builtin = $("model").value === "builtin";
  const hubUrl = builtin ? `${location.origin}/hub` : "https://huggingface.co";
  const modelName = builtin ? (where === "local" ? "fresco/tiny-sdxl-inpaint" : demo.tinyModelDir) : $("hf-id").value.trim();
  if (!modelName) return say("the server did not say where its built-in model is (demo.json): choose a Hugging Face model", true);
  const scheduler = $("scheduler").value;
  const seed = $("seed").value === "" ? undefined : Number($("seed").value);
  const input = {
    model_name: modelName,
    prompt: $("prompt").value,
    negative_prompt: $("negative").value,
    image_url: imageBlob,
    mask_url: maskImage,
    num_inference_steps: Number($("steps").value),
    guidance_scale: Number($("guidance").value),
    ...(seed === undefined ? {} : { seed }),
    // fal-ai/inpaint has no scheduler; fal-ai/lora/inpaint does (at full strength it is the same call).
    ...(scheduler ? { scheduler, noise_strength: 1 } : {}),
  };
  const endpoint = scheduler ? "fal-ai/lora/inpaint" : "fal-ai/inpaint";
  const client = where === "local" ? localClient(hubUrl) : remote;

  controller = new AbortController();
  $("run").disabled = true;
  $("stop").disabled = false;
  $("download-progress").hidden = $("step-progress").hidden = true;
  logEl.textContent = "";
  const started = performance.now();
  say(where === "local" ? "starting the engine on this device…" : "sending to the server…");
  try {
    const { data } = await client.subscribe(endpoint, {
      input,
      logs: true,
      abortSignal: controller.signal,
      onQueueUpdate: (u) => {
        if (u.status === "IN_QUEUE") return say(`queued (position ${u.queue_position ?? 0})`);
        const logs = u.logs ?? [];
        logEl.textContent = logs.map((l) => l.message).join("\n");
        logEl.scrollTop = logEl.scrollHeight;
        // The weight files' downloads (configs and tokenizers are too small to show).
        if (u.progress && (u.progress.total ?? u.progress.loaded) >= 1e6) {
          const { file, loaded, total } = u.progress;
          const mb = (n) => (n / 1e6).toFixed(1);
          show("download-bar", "download-label", loaded, total ?? loaded, `${file.split("/")[0]} ${mb(loaded)}${total ? `/${mb(total)}` : ""} MB`);
        }
        const step = logs.map((l) => /^step (\d+)\/(\d+)$/.exec(l.message)).filter(Boolean).at(-1);
        if (step) {
          show("step-bar", "step-label", Number(step[1]), Number(step[2]), `step ${step[1]} of ${step[2]}`);
          say(`painting: step ${step[1]} of ${step[2]}`);
        } else if (logs.length) {
          say(logs.at(-1).message);
        }
      },
    });
    const seconds = ((performance.now() - started) / 1000).toFixed(1);
    $("result").src = data.image?.url ?? data.images[0].url;
    $("result").classList.toggle("small", (data.image?.width ?? data.images[0].width) < 256);
    $("result-stage").dataset.empty = "false";
    $("result-info").textContent = `seed ${data.seed} · ${seconds} s on ${where === "local" ? "this device" : "the server"} · ${modelName}`;
    $("download").href = data.image?.url ?? data.images[0].url;
    $("download").download = `fresco-${data.seed}.png`;
    $("download").hidden = false;
    say(`done in ${seconds} s (seed ${data.seed})`);
  } catch (e) {
    if (e.name === "AbortError") say("stopped");
    else say(e.body?.detail?.[0]?.msg ?? e.message, true);
  } finally {
    controller = null;
    $("run").disabled = false;
    $("stop").disabled = true;
    if (where === "local") showCache().catch((e) => console.warn("model cache:", e));
  }
}

// ---------------------------------------------------------------------------------------------
// The model cache: what the local runs keep on this device, and a way to free it.

async function showCache() {
  if (webgpu || !navigator.storage?.getDirectory) return;
  const { bytes, files } = await localModelCache.usage();
  $("cache-row").hidden = false;
  $("cache-size").textContent = files.length ? `${(bytes / 1e6).toFixed(1)} MB in ${files.length} files` : "none";
  $("clear-cache").disabled = !files.length;
}

$("clear-cache").addEventListener("click", async () => {
  try {
    await localModelCache.clear();
    say("the cached models are gone: the next run on this device downloads its model again");
  } catch (e) {
    say(e.message, true);
  }
  await showCache();
});
showCache().catch((e) => console.warn("model cache:", e));

$("run").addEventListener("click", inpaint);
$("stop").addEventListener("click", () => controller?.abort());
window.fresco = { ready: true };
