// Runs in the page of local.test.mjs: @fresco/client in local mode (the engine in a Web Worker on
// SwiftShader's WebGPU), the tiny SDXL-inpaint model read by its Hugging Face id from the hub the
// page's `?hub=` names (the test's hub server, on another origin).
import { fal, createFalClient, localModelCache, ValidationError, ApiError } from "./pkg/index.js";

const MODEL = "fresco/tiny-sdxl-inpaint";
const PROMPT = "a red fox sitting in fresh snow";
const hubUrl = new URLSearchParams(location.search).get("hub") ?? `${location.origin}/hub`;

fal.config({ local: { hubUrl } });

const blobOf = async (path) => (await fetch(path)).blob();

/** RGB pixels of an encoded image, decoded without colour management. */
async function pixels(blob) {
  const bitmap = await createImageBitmap(blob, { colorSpaceConversion: "none", premultiplyAlpha: "none" });
  const canvas = new OffscreenCanvas(bitmap.width, bitmap.height);
  const ctx = canvas.getContext("2d");
  ctx.drawImage(bitmap, 0, 0);
  return { width: bitmap.width, height: bitmap.height, data: ctx.getImageData(0, 0, bitmap.width, bitmap.height).data };
}

/** PSNR in dB over the RGB channels of two same-sized images (Infinity when equal). */
function psnr(a, b) {
  if (a.width !== b.width || a.height !== b.height) return -1;
  let sum = 0;
  let n = 0;
  for (let i = 0; i < a.data.length; i += 4) {
    for (let c = 0; c < 3; c++) {
      const d = a.data[i + c] - b.data[i + c];
      sum += d * d;
      n++;
    }
  }
  return sum === 0 ? Infinity : 10 * Math.log10((255 * 255) / (sum / n));
}

const errorOf = (e) => ({
  thrown: true,
  name: e?.name,
  message: e?.message,
  status: e?.status,
  body: e?.body,
  isApiError: e instanceof ApiError,
  isValidationError: e instanceof ValidationError,
});

function input(overrides = {}) {
  return {
    model_name: MODEL,
    prompt: PROMPT,
    image_url: overrides.image_url,
    mask_url: new URL("fixtures/mask32.png", location.href).href,
    num_inference_steps: 4,
    guidance_scale: 7.5,
    seed: 1234,
    ...overrides,
  };
}

/** The engine's log line while another tab holds the model cache's lock. */
const WAITING = "waiting for another tab of this site, which is loading a model through the cache";

/** Releases the lock `holdCacheLock` took. */
let releaseCacheLock;

/** The client of `deviceLost` and `afterIdleLoss`. */
let lossy;

/** A finished call's logs, and its image against the CLI's. */
async function outcome(result, last) {
  const image = await (await fetch(result.data.image.url)).blob();
  return {
    logs: last.logs.map((l) => l.message),
    psnr: psnr(await pixels(image), await pixels(await blobOf("native.png"))),
  };
}

/**
 * A call its page aborts once `abortWhen(log lines)` holds: how it ended for the caller, and
 * the request's result and status afterwards (the cancel reaches the worker between steps, or
 * while it waits for the cache: the call ends as fal ends a cancelled one).
 */
async function abortedCall(overrides, abortWhen) {
  const controller = new AbortController();
  let requestId;
  let outcome;
  try {
    await fal.subscribe("fal-ai/inpaint", {
      input: input({ image_url: new URL("fixtures/image32.png", location.href).href, ...overrides }),
      logs: true,
      abortSignal: controller.signal,
      onEnqueue: (id) => (requestId = id),
      onQueueUpdate: (u) => {
        if (abortWhen((u.logs ?? []).map((l) => l.message))) controller.abort();
      },
    });
    outcome = { thrown: false };
  } catch (e) {
    outcome = errorOf(e);
  }
  let result;
  try {
    await fal.queue.result("fal-ai/inpaint", { requestId });
  } catch (e) {
    result = errorOf(e);
  }
  const status = await fal.queue.status("fal-ai/inpaint", { requestId, logs: true });
  return { outcome, result, status: status.status, error: status.error, logs: status.logs.map((l) => l.message) };
}

export const scenarios = {
  /** `fal.subscribe` locally: the image as a Blob, the mask as a URL; the result against the CLI's. */
  async subscribe() {
    const updates = [];
    let enqueued;
    const t0 = performance.now();
    const result = await fal.subscribe("fal-ai/inpaint", {
      input: input({ image_url: await blobOf("fixtures/image32.png") }),
      logs: true,
      onEnqueue: (id) => (enqueued = id),
      onQueueUpdate: (u) => updates.push(u),
    });
    const ms = performance.now() - t0;
    const image = await (await fetch(result.data.image.url)).blob();
    const native = await blobOf("native.png");
    return {
      ms,
      enqueued,
      progress: updates.filter((u) => u.progress).map((u) => u.progress),
      requestId: result.requestId,
      data: result.data,
      statuses: updates.map((u) => u.status),
      logs: updates.at(-1).logs.map((l) => l.message),
      logShape: updates.at(-1).logs[0],
      last: { ...updates.at(-1), logs: undefined },
      imageType: image.type,
      imageSize: image.size,
      psnr: psnr(await pixels(image), await pixels(native)),
    };
  },

  /** The same call, its failure returned instead of thrown. */
  async attempt(overrides = {}) {
    try {
      const result = await fal.subscribe("fal-ai/inpaint", {
        input: input({ image_url: new URL("fixtures/image32.png", location.href).href, ...overrides }),
        logs: true,
      });
      return { thrown: false, seed: result.data.seed };
    } catch (e) {
      return errorOf(e);
    }
  },

  /** Overwrites the start of the largest file in the model cache (OPFS): its header is garbage. */
  async corruptCache() {
    const root = await navigator.storage.getDirectory();
    const dir = await root.getDirectoryHandle("fresco-cache");
    let largest;
    for await (const [name, handle] of dir.entries()) {
      if (!name.endsWith(".bin")) continue;
      const size = (await handle.getFile()).size;
      if (!largest || size > largest.size) largest = { name, handle, size };
    }
    const writable = await largest.handle.createWritable({ keepExistingData: true });
    await writable.write({ type: "write", position: 0, data: new Uint8Array(8).fill(0xff) });
    await writable.close();
    return { name: largest.name, size: largest.size };
  },

  /** `fal.queue.*` locally: submit, status, result, and the same model kept loaded. */
  async queue() {
    const endpoint = "fal-ai/inpaint";
    // The mask as a data: URI this time.
    const mask = await new Promise((resolve) => {
      const reader = new FileReader();
      blobOf("fixtures/mask32.png").then((b) => reader.readAsDataURL(b));
      reader.onload = () => resolve(reader.result);
    });
    const { request_id: requestId, status, queue_position } = await fal.queue.submit(endpoint, {
      input: input({ image_url: new URL("fixtures/image32.png", location.href).href, mask_url: mask, seed: 99 }),
    });
    const first = await fal.queue.status(endpoint, { requestId, logs: true });
    const completed = await fal.queue.subscribeToStatus(endpoint, { requestId, logs: true, mode: "streaming" });
    const result = await fal.queue.result(endpoint, { requestId });
    let missing;
    try {
      await fal.queue.status(endpoint, { requestId: "nope" });
    } catch (e) {
      missing = errorOf(e);
    }
    return {
      submitted: { requestId, status, queue_position },
      first: first.status,
      completed: completed.status,
      logs: completed.logs.map((l) => l.message),
      seed: result.data.seed,
      width: result.data.image.width,
      missing,
    };
  },

  /** An abort after the first step: the subscription rejects, the engine stops before the next. */
  async abort() {
    const r = await abortedCall({ num_inference_steps: 30 }, (lines) => lines.some((m) => m.startsWith("step ")));
    return { ...r, steps: r.logs.filter((m) => m.startsWith("step ")) };
  },

  /** A bad input is fal's 422, from the engine's own validation. */
  async invalid() {
    try {
      await fal.subscribe("fal-ai/inpaint", { input: { model_name: MODEL, image_url: "data:,x", mask_url: "data:,y", num_inference_steps: 0 } });
      return { thrown: false };
    } catch (e) {
      return errorOf(e);
    }
  },

  /** A model that is not on the hub: a 422 on `model_name` naming what is missing. */
  async missingModel() {
    try {
      await fal.run("fal-ai/inpaint", { input: input({ model_name: "nobody/nothing", image_url: new URL("fixtures/image32.png", location.href).href }) });
      return { thrown: false };
    } catch (e) {
      return errorOf(e);
    }
  },

  /** `fal-ai/lora/inpaint` locally, with a scheduler and JPEG output (the model stays loaded). */
  async lora() {
    const result = await fal.subscribe("fal-ai/lora/inpaint", {
      input: {
        ...input({ image_url: await blobOf("fixtures/image32.png"), seed: 7 }),
        scheduler: "DDIM",
        noise_strength: 1,
        image_format: "jpeg",
        num_images: 2,
      },
    });
    const bytes = new Uint8Array(await (await fetch(result.data.images[1].url)).arrayBuffer());
    return { data: result.data, head: [...bytes.slice(0, 3)] };
  },

  /**
   * A client whose worker can lose its GPU device (lose-device-worker.mjs): two calls submitted
   * together, the first losing the device after its first step, the second waiting behind it.
   */
  async deviceLost() {
    lossy = createFalClient({ local: { hubUrl, workerUrl: new URL("lose-device-worker.mjs", location.href).href } });
    const image_url = new URL("fixtures/image32.png", location.href).href;
    let last;
    const first = lossy.subscribe("fal-ai/inpaint", { input: input({ image_url, prompt: `${PROMPT} [lose the device]` }), logs: true });
    const second = lossy.subscribe("fal-ai/inpaint", { input: input({ image_url }), logs: true, onQueueUpdate: (u) => (last = u) });
    const failed = await first.then(() => ({ thrown: false }), errorOf);
    return { failed, second: await outcome(await second, last) };
  },

  /** The same client again, after the test destroyed its idle worker's device. */
  async afterIdleLoss() {
    let last;
    const result = await lossy.subscribe("fal-ai/inpaint", {
      input: input({ image_url: new URL("fixtures/image32.png", location.href).href }),
      logs: true,
      onQueueUpdate: (u) => (last = u),
    });
    return outcome(result, last);
  },

  /** Takes the model cache's lock, as a tab loading a model does, until `releaseCacheLock`. */
  async holdCacheLock() {
    await new Promise((granted) =>
      navigator.locks.request("fresco-model-cache", () => {
        granted();
        return new Promise((release) => (releaseCacheLock = release));
      }),
    );
    return true;
  },

  releaseCacheLock() {
    releaseCacheLock();
    return true;
  },

  /** A call whose log lines the test reads while it runs (`window.watched`). */
  async watchedCall() {
    window.watched = { logs: [] };
    const result = await fal.subscribe("fal-ai/inpaint", {
      input: input({ image_url: new URL("fixtures/image32.png", location.href).href }),
      logs: true,
      onQueueUpdate: (u) => {
        if (u.logs) window.watched.logs = u.logs.map((l) => l.message);
      },
    });
    const image = await (await fetch(result.data.image.url)).blob();
    return { logs: window.watched.logs, psnr: psnr(await pixels(image), await pixels(await blobOf("native.png"))) };
  },

  /** A call aborted while it waits for the cache's lock: the engine ends it without the lock. */
  abortWhileWaiting: () => abortedCall({}, (lines) => lines.includes(WAITING)),

  /** `localModelCache.clear()`, timed: when it resolved (`performance.timeOrigin`-based ms). */
  async timedClear() {
    await localModelCache.clear();
    return performance.timeOrigin + performance.now();
  },

  /** `localModelCache`: what the cache holds, then cleared. */
  async cache() {
    const before = await localModelCache.usage();
    await localModelCache.clear();
    const after = await localModelCache.usage();
    const root = await navigator.storage.getDirectory();
    const entries = [];
    for await (const [name] of root.entries()) entries.push(name);
    return { before, after, entries };
  },

  /** One client with both: the local endpoints run here, every other one goes to the proxy. */
  async mixed() {
    const both = createFalClient({ proxyUrl: "/api/fal/proxy", local: { hubUrl, endpoints: ["fal-ai/inpaint"] } });
    const echo = await both.subscribe("fresco/echo", { input: { hello: "remote" } });
    return { echo: echo.data };
  },

  /** The same page, remote: a client without `local` sends the call through fresco's proxy. */
  async remote(modelDir) {
    const remote = createFalClient({ proxyUrl: "/api/fal/proxy" });
    const updates = [];
    const result = await remote.subscribe("fal-ai/inpaint", {
      input: input({ model_name: modelDir, image_url: new URL("fixtures/image32.png", location.href).href }),
      logs: true,
      pollInterval: 50,
      onQueueUpdate: (u) => updates.push(u),
    });
    const image = await (await fetch(result.data.image.url)).blob();
    const native = await blobOf("native.png");
    return {
      url: result.data.image.url,
      logs: updates.at(-1).logs.map((l) => l.message),
      psnr: psnr(await pixels(image), await pixels(native)),
    };
  },
};
