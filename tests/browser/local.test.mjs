// @fresco/client's local mode in headless Chromium: `fal.config({ local })` runs `fal-ai/inpaint`
// in a Web Worker on WebGPU (SwiftShader, a real WebGPU implementation on the CPU, f32). The page
// and its files are served by `fresco serve`; the tiny SDXL-inpaint model is loaded by its Hugging
// Face id from a hub on another origin laid out as huggingface.co (tests/fixtures/hub, served by
// `startHub`, which also breaks one download off halfway and offers a model too big to cache).
// The image must be the one `fresco inpaint` (the native CLI, on the CPU) paints for the same
// input and seed; after a reload the model comes from the cache, with no request to the hub.
// FRESCO_BIN and FRESCO_CLIENT as in client.test.mjs; the package must include the engine
// (`cargo xtask npm`). The tests run in order and share the page.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { cpSync, existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { frescoClientDir, launchChromium, startFresco, startHub } from "../lib/fresco.mjs";

const here = fileURLToPath(new URL(".", import.meta.url));
const fixtures = fileURLToPath(new URL("../fixtures/", import.meta.url));
const modelDir = join(fixtures, "tiny-sdxl-inpaint");
let server;
let hub;
let browser;
let page;
let base;
let work;
const pageErrors = [];
const consoleLines = [];
const requests = [];

before(async () => {
  const pkg = frescoClientDir();
  assert.ok(existsSync(join(pkg, "engine_bg.wasm")), `${pkg} has no engine (cargo xtask npm builds it)`);
  work = mkdtempSync(join(tmpdir(), "fresco-local-"));
  const www = join(work, "www");
  cpSync(pkg, join(www, "pkg"), { recursive: true });
  for (const f of ["local-scenarios.mjs", "lose-device-worker.mjs"]) cpSync(join(here, f), join(www, f));
  for (const f of ["image32.png", "mask32.png"]) cpSync(join(fixtures, "pipelines", f), join(www, "fixtures", f));
  writeFileSync(
    join(www, "index.html"),
    `<!doctype html><title>fresco local mode test</title>
<script type="module">import { scenarios } from "./local-scenarios.mjs"; window.scenarios = scenarios;</script>`,
  );
  // What the native engine paints for the same call (fal-ai/inpaint's defaults: negative prompt "").
  execFileSync(process.env.FRESCO_BIN, [
    "inpaint", "--model", modelDir, "--image", join(fixtures, "pipelines/image32.png"),
    "--mask", join(fixtures, "pipelines/mask32.png"), "--prompt", "a red fox sitting in fresh snow",
    "--negative-prompt", "", "--steps", "4", "--guidance", "7.5", "--seed", "1234",
    "--out", join(www, "native.png"),
  ], { stdio: ["ignore", "ignore", "inherit"] });
  // The remote scenario's image_url is a page of this server's site, on 127.0.0.1: private
  // addresses are allowed explicitly, as they are refused by default.
  ({ server, base } = await startFresco([
    "--data-dir", join(work, "data"), "--www", www, "--models-dir", fixtures, "--allow-private-urls",
  ]));
  hub = await startHub({
    root: join(fixtures, "hub"),
    cutOnce: "unet/diffusion_pytorch_model.safetensors",
    oversized: "fresco/too-big",
    wide: "fresco/too-wide",
  });
  browser = await launchChromium({ webgpu: true });
  // A context of its own (not `browser.newPage()`'s) so that a second tab can share its origin.
  page = await (await browser.newContext()).newPage();
  page.on("pageerror", (e) => pageErrors.push(String(e)));
  page.on("console", (m) => consoleLines.push(`${m.type()}: ${m.text()}`));
  page.on("request", (r) => requests.push(r.url()));
  await page.goto(`${base}/?hub=${encodeURIComponent(hub.url)}`);
  await ready();
});

const ready = () => page.waitForFunction(() => window.scenarios !== undefined, null, { timeout: 30000 });

after(async () => {
  await browser?.close();
  server?.kill("SIGTERM");
  hub?.close();
  if (work) rmSync(work, { recursive: true, force: true });
});

const run = (name, arg) => page.evaluate(([n, a]) => window.scenarios[n](a), [name, arg]);
const UNET = "/fresco/tiny-sdxl-inpaint/resolve/main/unet/diffusion_pytorch_model.safetensors";

test("local: fal.subscribe paints on WebGPU what the native CLI paints", { timeout: 900_000 }, async () => {
  const r = await run("subscribe");
  console.log(`local fal.subscribe (first call: engine load, model load, kernel compile): ${(r.ms / 1000).toFixed(1)} s; PSNR against the CLI ${r.psnr} dB`);
  assert.equal(r.requestId, r.enqueued);
  assert.deepEqual([...new Set(r.statuses)], ["IN_QUEUE", "IN_PROGRESS", "COMPLETED"], r.statuses.join());
  // The result has fal's shape, the image a blob: URL of the page whose bytes are a PNG.
  assert.match(r.data.image.url, /^blob:http:\/\/127\.0\.0\.1:\d+\//);
  assert.equal(r.data.seed, 1234);
  assert.equal(r.data.image.content_type, "image/png");
  assert.match(r.data.image.file_name, /^[0-9a-f]{12}\.png$/);
  assert.equal(r.data.image.file_size, r.imageSize);
  assert.equal(r.imageType, "image/png");
  assert.equal(r.last.status, "COMPLETED");
  assert.ok(r.last.metrics.inference_time > 0, JSON.stringify(r.last));
  // A log line per step, after the model's loading lines.
  assert.deepEqual(r.logs.filter((l) => l.startsWith("step ")), ["step 1/3", "step 2/3", "step 3/3"]);
  assert.ok(r.logs.includes("loading fresco/tiny-sdxl-inpaint") && r.logs.includes("loading the UNet"), r.logs.join("\n"));
  assert.ok(r.logs.includes("seed 1234"), r.logs.join("\n"));
  assert.deepEqual(Object.keys(r.logShape).sort(), ["level", "message", "source", "timestamp"]);
  assert.ok(r.psnr >= 40, `PSNR ${r.psnr} dB against the native CLI (40 dB required)`);
  // The weights came from the hub by id; no call went to a server's queue.
  assert.ok(!requests.some((u) => u.includes("/api/fal/proxy")), requests.join("\n"));
  // Before any download, each weight file's header alone was read (a bounded range).
  const unet = hub.seen.filter((s) => s.path === UNET);
  assert.match(unet[0]?.range ?? "", /^bytes=0-\d+$/, JSON.stringify(unet));
  assert.ok(r.logs.includes("4 weight files, 15.7 MB in all"), r.logs.join("\n"));
  // The UNet's download broke off halfway and was resumed from where it stopped.
  const downloads = unet.slice(1);
  assert.equal(downloads.length, 2, JSON.stringify(unet));
  assert.equal(downloads[0].range, null);
  assert.match(downloads[1].range, /^bytes=[1-9]\d*-$/);
  assert.ok(r.logs.some((l) => /^the download of unet\/diffusion_pytorch_model\.safetensors broke off after/.test(l)), r.logs.join("\n"));
  assert.ok(r.logs.some((l) => l.startsWith("resuming unet/diffusion_pytorch_model.safetensors")), r.logs.join("\n"));
  assert.ok(r.logs.includes("downloaded text_encoder_2/model.safetensors (6.5 MB)"), r.logs.join("\n"));
  // Download progress reached the queue updates in bytes.
  const done = r.progress.find((p) => p.file === "text_encoder_2/model.safetensors" && p.loaded === p.total);
  assert.ok(done && done.total === 6453800, JSON.stringify(r.progress.slice(0, 5)));
  assert.deepEqual(pageErrors, []);
});

test("local: fal.queue.* and the model kept on the GPU between calls", { timeout: 600_000 }, async () => {
  const before = hub.seen.length;
  const r = await run("queue");
  assert.equal(r.submitted.status, "IN_QUEUE");
  assert.equal(r.submitted.queue_position, 0);
  assert.match(r.submitted.requestId, /^[0-9a-f-]{36}$/);
  assert.ok(["IN_QUEUE", "IN_PROGRESS"].includes(r.first), r.first);
  assert.equal(r.completed, "COMPLETED");
  assert.equal(r.seed, 99);
  assert.ok(r.width > 0);
  assert.ok(!r.logs.some((l) => l.startsWith("loading")), `the model was loaded again: ${r.logs.join("\n")}`);
  assert.equal(hub.seen.length, before, "no file was requested again");
  assert.equal(r.missing.status, 404);
  assert.ok(r.missing.isApiError);
});

test("local: fal-ai/lora/inpaint with a scheduler, two images, JPEG", { timeout: 600_000 }, async () => {
  const before = hub.seen.length;
  const r = await run("lora");
  assert.equal(r.data.seed, 7);
  assert.equal(r.data.images.length, 2);
  assert.deepEqual(r.data.has_nsfw_concepts, [false, false]);
  for (const image of r.data.images) {
    assert.match(image.url, /^blob:/);
    assert.equal(image.content_type, "image/jpeg");
    assert.match(image.file_name, /^[0-9a-f]{12}\.jpg$/);
  }
  assert.notEqual(r.data.images[0].url, r.data.images[1].url);
  assert.deepEqual(r.head, [0xff, 0xd8, 0xff], "a JPEG");
  assert.equal(hub.seen.length, before, "the model stayed loaded");
});

test("local: endpoints not listed in `local` still go to the proxy", async () => {
  const r = await run("mixed");
  assert.deepEqual(r.echo.hello, "remote");
});

test("local: an abort stops the engine between steps", { timeout: 600_000 }, async () => {
  const r = await run("abort");
  assert.equal(r.outcome.name, "AbortError", JSON.stringify(r.outcome));
  assert.equal(r.result.status, 400, JSON.stringify(r.result));
  assert.equal(r.result.body.error_type, "client_cancelled");
  assert.equal(r.status, "COMPLETED");
  assert.equal(r.error, "Request was cancelled");
  assert.ok(r.steps.length >= 1 && r.steps.length < 29, `the run stopped early: ${r.steps.join(", ")}`);
});

test("local: after a reload the model comes from the cache, with no request to the hub", { timeout: 900_000 }, async () => {
  const before = hub.seen.length;
  await page.reload();
  await ready();
  const r = await run("subscribe");
  assert.equal(hub.seen.length, before, JSON.stringify(hub.seen.slice(before)));
  assert.ok(r.logs.includes("unet/diffusion_pytorch_model.safetensors from the cache (2.2 MB)"), r.logs.join("\n"));
  assert.ok(r.psnr >= 40, `PSNR ${r.psnr} dB against the native CLI`);
});

test("local: a corrupt cached file is a clear error, and the next call downloads it again", { timeout: 900_000 }, async () => {
  const corrupted = await run("corruptCache");
  assert.ok(corrupted.size > 6_000_000, JSON.stringify(corrupted));
  await page.reload();
  await ready();
  const failed = await run("attempt");
  assert.ok(failed.thrown && failed.status >= 400, JSON.stringify(failed));
  assert.match(failed.message, /text_encoder_2\/model\.safetensors.*(implausible|corrupt|header)/i);
  const before = hub.seen.length;
  const again = await run("attempt");
  assert.equal(again.thrown, false, JSON.stringify(again));
  // That file alone is read again: its header, then its download.
  const asked = hub.seen.slice(before);
  assert.deepEqual([...new Set(asked.map((s) => s.path))], ["/fresco/tiny-sdxl-inpaint/resolve/main/text_encoder_2/model.safetensors"]);
  assert.deepEqual(asked.map((s) => s.range?.replace(/\d+$/, "N") ?? null), ["bytes=0-N", null]);
});

/** Whether the hub saw only header reads (bounded ranges) of `id`'s weight files, no download. */
const onlyHeadersOf = (id) =>
  hub.seen.filter((s) => s.path.startsWith(`/${id}/`) && s.path.endsWith(".safetensors")).every((s) => /^bytes=0-\d+$/.test(s.range ?? ""));

test("local: a model larger than the storage quota is refused before it downloads", { timeout: 300_000 }, async () => {
  const r = await run("attempt", { model_name: "fresco/too-big" });
  assert.ok(r.thrown && r.status === 422, JSON.stringify(r));
  assert.deepEqual(r.body.detail[0].loc, ["body", "model_name"]);
  // The whole model is counted at once (4 files of 1 PB each), from the files' headers.
  assert.match(r.body.detail[0].msg, /not enough storage to cache .*fresco\/too-big.*unet\/diffusion_pytorch_model\.safetensors.*: it needs 4000000000\.0 MB/);
  assert.ok(onlyHeadersOf("fresco/too-big"), JSON.stringify(hub.seen.filter((s) => s.path.includes("too-big"))));
});

test("local: a model with a tensor larger than the device binds is refused before it downloads", { timeout: 300_000 }, async () => {
  const r = await run("attempt", { model_name: "fresco/too-wide" });
  assert.ok(r.thrown && r.status === 422, JSON.stringify(r));
  assert.deepEqual(r.body.detail[0].loc, ["body", "model_name"]);
  assert.match(
    r.body.detail[0].msg,
    /unet\/diffusion_pytorch_model\.safetensors: tensor "conv_in\.weight" \[400000000\] needs 1600\.0 MB in one GPU buffer and this device binds at most \d+\.\d MB: the model cannot run on this GPU in f32/,
  );
  const seen = hub.seen.filter((s) => s.path.startsWith("/fresco/too-wide/") && s.path.endsWith(".safetensors"));
  assert.ok(seen.some((s) => s.path.endsWith("/text_encoder/model.safetensors")), "every component's header was read first");
  assert.ok(onlyHeadersOf("fresco/too-wide"), JSON.stringify(seen));
});

test("local: a bad input is fal's 422 (ValidationError)", async () => {
  const r = await run("invalid");
  assert.ok(r.thrown && r.isValidationError, JSON.stringify(r));
  assert.equal(r.status, 422);
  const fields = r.body.detail.map((d) => d.loc.at(-1));
  assert.ok(fields.includes("prompt") && fields.includes("num_inference_steps"), JSON.stringify(r.body));
});

test("local: a model missing from the hub is a 422 on model_name", { timeout: 120_000 }, async () => {
  const r = await run("missingModel");
  assert.ok(r.thrown && r.isValidationError, JSON.stringify(r));
  assert.deepEqual(r.body.detail[0].loc, ["body", "model_name"]);
  assert.match(r.body.detail[0].msg, /model_index\.json/);
});

test("local: a lost GPU device fails the call it ran, and the calls after it run on a new one", { timeout: 900_000 }, async () => {
  const r = await run("deviceLost");
  // The call that lost its device ends at once with the reason, as a 500.
  assert.ok(r.failed.thrown && r.failed.isApiError && r.failed.status === 500, JSON.stringify(r.failed));
  assert.match(r.failed.message, /^the GPU device was lost \(destroyed/);
  assert.equal(r.failed.body.error_type, "runner_server_error");
  // The call waiting behind it moved to a new worker, which opened a new device and loaded the
  // model again (from the cache), and painted what the CLI paints.
  assert.ok(r.second.logs.includes("loading fresco/tiny-sdxl-inpaint"), r.second.logs.join("\n"));
  assert.ok(r.second.logs.includes("unet/diffusion_pytorch_model.safetensors from the cache (2.2 MB)"), r.second.logs.join("\n"));
  assert.ok(r.second.psnr >= 40, `PSNR ${r.second.psnr} dB against the native CLI`);

  // A device lost while nothing runs: the page drops that worker by itself, and the next call
  // runs on a new one (on the lost device it would fail).
  const workers = page.workers().filter((w) => w.url().endsWith("/lose-device-worker.mjs"));
  assert.equal(workers.length, 1, workers.map((w) => w.url()).join());
  const closed = new Promise((resolve) => workers[0].once("close", () => resolve(true)));
  assert.equal(await workers[0].evaluate(() => self.loseDevice()), 1);
  const timeout = new Promise((resolve) => setTimeout(() => resolve(false), 60_000));
  assert.ok(await Promise.race([closed, timeout]), "the page kept the worker whose device was lost");
  const after = await run("afterIdleLoss");
  assert.ok(after.logs.includes("loading fresco/tiny-sdxl-inpaint"), after.logs.join("\n"));
  assert.ok(after.psnr >= 40, `PSNR ${after.psnr} dB against the native CLI`);
  assert.deepEqual(pageErrors, []);
});

test("local: localModelCache tells what is cached, and clears it", async () => {
  const r = await run("cache");
  const unet = r.before.files.find((f) => f.url.endsWith(UNET));
  assert.deepEqual(unet, { url: `${hub.url}${UNET}`, bytes: 2158184, complete: true }, JSON.stringify(r.before.files));
  assert.equal(r.before.bytes, r.before.files.reduce((sum, f) => sum + f.bytes, 0));
  assert.ok(r.before.bytes > 15_000_000, String(r.before.bytes));
  assert.deepEqual(r.after, { bytes: 0, files: [] });
  assert.ok(!r.entries.includes("fresco-cache"), r.entries.join());
});

test("local: a tab that loads a model while another one is loading waits its turn (or its abort)", { timeout: 600_000 }, async () => {
  // This page takes the cache's lock as a tab loading a model holds it; a second tab of the site
  // (same origin, same cache) then starts a local call and clears the cache.
  await run("holdCacheLock");
  const other = await page.context().newPage();
  const otherErrors = [];
  other.on("pageerror", (e) => otherErrors.push(String(e)));
  try {
    await other.goto(`${base}/?hub=${encodeURIComponent(hub.url)}`);
    await other.waitForFunction(() => window.scenarios !== undefined, null, { timeout: 30000 });
    const weights = () => hub.seen.filter((s) => s.path.endsWith(".safetensors")).length;
    const waiting = "waiting for another tab of this site, which is loading a model through the cache";
    // A call aborted while it waits ends at once, as a cancelled call, though the lock is still held.
    const aborted = await other.evaluate(() => window.scenarios.abortWhileWaiting());
    assert.equal(aborted.outcome.name, "AbortError", JSON.stringify(aborted.outcome));
    assert.equal(aborted.result?.body?.error_type, "client_cancelled", JSON.stringify(aborted.result));
    assert.equal(aborted.status, "COMPLETED");
    assert.ok(aborted.logs.includes(waiting) && !aborted.logs.some((l) => l.includes("weight files")), aborted.logs.join("\n"));
    const call = other.evaluate(() => window.scenarios.watchedCall());
    await other.waitForFunction((line) => window.watched?.logs.includes(line), waiting, { timeout: 120_000 });
    const clearing = other.evaluate(() => window.scenarios.timedClear());
    // While this page holds the lock, the other tab reads nothing of the model, and its clear waits.
    const before = weights();
    await new Promise((resolve) => setTimeout(resolve, 1500));
    assert.equal(weights(), before, "the waiting tab requested weights");
    const released = await page.evaluate(() => {
      window.scenarios.releaseCacheLock();
      return performance.timeOrigin + performance.now();
    });
    const r = await call;
    const [waited, planned] = [r.logs.indexOf(waiting), r.logs.indexOf("4 weight files, 15.7 MB in all")];
    assert.ok(waited >= 0 && waited < planned, r.logs.join("\n"));
    assert.ok(r.psnr >= 40, `PSNR ${r.psnr} dB against the native CLI`);
    assert.ok((await clearing) >= released, "localModelCache.clear() ran while another tab held the cache");
    assert.deepEqual(otherErrors, []);
  } finally {
    await page.evaluate(() => window.scenarios.releaseCacheLock());
    await other.close();
  }
});

test("remote: the same page through fresco's proxy", { timeout: 600_000 }, async () => {
  const r = await run("remote", modelDir);
  assert.ok(r.url.startsWith(base), r.url);
  assert.ok(r.logs.includes("step 3/3"), r.logs.join("\n"));
  assert.equal(r.psnr, Infinity, "the server's engine paints what the CLI paints");
  assert.deepEqual(pageErrors, []);
});
