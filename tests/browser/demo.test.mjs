// The demo site (www/, assembled by `cargo xtask` with the package and the tiny model's hub into
// FRESCO_SITE) driven as a person would in headless Chromium with WebGPU: open an image, paint a
// mask, try the eraser, invert and clear, prompt, run on this device (again with a scheduler),
// then on the server; and the page as a browser without WebGPU sees it. Saves screenshots into
// FRESCO_SCREENSHOTS (default: a temporary directory).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { launchChromium, startFresco } from "../lib/fresco.mjs";

const fixtures = fileURLToPath(new URL("../fixtures/", import.meta.url));
const shots = process.env.FRESCO_SCREENSHOTS ?? mkdtempSync(join(tmpdir(), "fresco-shots-"));
let server;
let browser;
let page;
let work;
const pageErrors = [];

before(async () => {
  const site = process.env.FRESCO_SITE;
  assert.ok(site && existsSync(join(site, "pkg/engine_bg.wasm")), "FRESCO_SITE must name the assembled demo site (cargo xtask demo or test)");
  mkdirSync(shots, { recursive: true });
  work = mkdtempSync(join(tmpdir(), "fresco-demo-"));
  let base;
  ({ server, base } = await startFresco(["--data-dir", join(work, "data"), "--www", site, "--models-dir", fixtures]));
  browser = await launchChromium({ webgpu: true });
  page = await browser.newPage({ viewport: { width: 1440, height: 960 } });
  page.on("pageerror", (e) => pageErrors.push(String(e)));
  await page.goto(`${base}/`);
  await page.waitForFunction(() => window.fresco?.ready, null, { timeout: 30000 });
});

after(async () => {
  await browser?.close();
  server?.kill("SIGTERM");
  if (work) rmSync(work, { recursive: true, force: true });
});

/** Pixels painted on the mask canvas. */
const painted = () =>
  page.evaluate(() => {
    const c = document.getElementById("mask");
    const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
    let n = 0;
    for (let i = 3; i < d.length; i += 4) n += d[i] > 127 ? 1 : 0;
    return { n, total: c.width * c.height };
  });

/** A brush stroke across the mask, in fractions of its box. */
async function drag(points) {
  const box = await page.locator("#mask").boundingBox();
  const at = ([x, y]) => [box.x + x * box.width, box.y + y * box.height];
  await page.mouse.move(...at(points[0]));
  await page.mouse.down();
  for (const p of points.slice(1)) await page.mouse.move(...at(p), { steps: 8 });
  await page.mouse.up();
}

test("demo: a person opens an image, paints, and inpaints on this device and on the server", { timeout: 1_200_000 }, async () => {
  // WebGPU is there (SwiftShader): no warning, "this device" is on.
  assert.equal(await page.locator("#gpu-note").isHidden(), true);
  assert.equal(await page.locator('input[value="local"]').isChecked(), true);

  // Open an image from disk, then take the sample landscape instead.
  await page.setInputFiles("#file", join(fixtures, "pipelines/image32.png"));
  await page.waitForFunction(() => document.getElementById("status").textContent.startsWith("image32.png: 32×32"));
  await page.click("#sample");
  await page.waitForFunction(() => document.getElementById("picture").width === 512);

  // Running without a mask is refused with a message.
  await page.click("#run");
  assert.match(await page.textContent("#status"), /paint the mask first/);

  // Paint, erase part of it, invert twice (back to the same), clear, paint again.
  await page.fill("#brush", "60");
  await drag([[0.3, 0.75], [0.5, 0.7], [0.7, 0.78]]);
  const first = await painted();
  assert.ok(first.n > 2000, JSON.stringify(first));
  await page.click("#eraser");
  await drag([[0.3, 0.75], [0.4, 0.72]]);
  const erased = await painted();
  assert.ok(erased.n < first.n, `${erased.n} < ${first.n}`);
  await page.click("#eraser");
  await page.click("#invert");
  assert.equal((await painted()).n, erased.total - erased.n);
  await page.click("#invert");
  assert.equal((await painted()).n, erased.n);
  await page.click("#clear");
  assert.equal((await painted()).n, 0);
  await drag([[0.25, 0.8], [0.5, 0.72], [0.75, 0.8]]);
  await drag([[0.6, 0.2], [0.8, 0.35]]);
  assert.ok((await painted()).n > 2000);

  await page.fill("#prompt", "a red fox sitting in fresh snow, photo");
  await page.fill("#steps", "4");
  await page.fill("#seed", "42");
  await page.screenshot({ path: join(shots, "demo-painted.png") });

  // On this device.
  await page.click("#run");
  await page.waitForFunction(() => document.getElementById("result-info").textContent.includes("this device"), null, { timeout: 900_000 });
  assert.match(await page.textContent("#result-info"), /^seed 42 · [\d.]+ s on this device · fresco\/tiny-sdxl-inpaint$/);
  assert.match(await page.getAttribute("#download", "href"), /^blob:/);
  assert.equal(await page.getAttribute("#download", "download"), "fresco-42.png");
  assert.ok(await page.evaluate(() => document.getElementById("result").naturalWidth > 0));
  assert.match(await page.textContent("#step-label"), /^step 3 of 3$/);
  assert.match(await page.textContent("#log"), /loading the UNet/);
  assert.match(await page.textContent("#status"), /^done in [\d.]+ s \(seed 42\)$/);
  // The model it downloaded is now cached on this device, and the page says how much.
  await page.waitForFunction(() => /MB in \d+ files$/.test(document.getElementById("cache-size").textContent), null, { timeout: 30_000 });
  assert.match(await page.textContent("#cache-size"), /^1[5-9]\.\d MB in \d+ files$/);
  await page.screenshot({ path: join(shots, "demo-local.png") });

  // Again with a scheduler (the page then calls fal-ai/lora/inpaint), the model still loaded.
  await page.selectOption("#scheduler", "Euler A");
  await page.fill("#seed", "43");
  await page.click("#run");
  await page.waitForFunction(() => document.getElementById("result-info").textContent.startsWith("seed 43"), null, { timeout: 600_000 });
  assert.doesNotMatch(await page.textContent("#log"), /loading the UNet/);
  await page.selectOption("#scheduler", "");
  await page.fill("#seed", "42");

  // On the server, from the same page.
  await page.check('input[value="remote"]');
  await page.click("#run");
  await page.waitForFunction(() => document.getElementById("result-info").textContent.includes("the server"), null, { timeout: 600_000 });
  assert.match(await page.textContent("#result-info"), /^seed 42 · [\d.]+ s on the server · /);
  assert.match(await page.getAttribute("#download", "href"), /^http:\/\/127\.0\.0\.1:\d+\//);
  await page.screenshot({ path: join(shots, "demo-remote.png") });
  console.log(`screenshots in ${shots}`);

  // The cached model can be cleared from the page.
  await page.click("#clear-cache");
  await page.waitForFunction(() => document.getElementById("cache-size").textContent === "none", null, { timeout: 30_000 });
  assert.match(await page.textContent("#status"), /^the cached models are gone/);
  assert.equal(await page.isDisabled("#clear-cache"), true);
  assert.deepEqual(pageErrors, []);
});

test("demo: a browser without WebGPU is told so, and the server is chosen for it", async () => {
  const context = await browser.newContext();
  // As in a browser that has no WebGPU at all.
  await context.addInitScript(() => Object.defineProperty(Navigator.prototype, "gpu", { get: () => undefined }));
  const bare = await context.newPage();
  await bare.goto(page.url());
  await bare.waitForFunction(() => window.fresco?.ready, null, { timeout: 30000 });
  assert.equal(await bare.locator("#gpu-note").isVisible(), true);
  assert.match(await bare.textContent("#gpu-note"), /This device cannot run the model: this browser has no WebGPU/);
  assert.equal(await bare.locator('input[value="local"]').isDisabled(), true);
  assert.equal(await bare.locator('input[value="remote"]').isChecked(), true);
  await context.close();
});
