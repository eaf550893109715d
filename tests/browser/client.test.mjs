// @fresco/client in headless Chromium against the real `fresco serve`: the server serves a page
// (scenarios.mjs + the built package) and its proxy route; Playwright drives the page. The same
// calls as the Node suite (../e2e/suite.mjs), in a browser, where a plain string `proxyUrl` is
// used (as in the original) and no User-Agent is set. FRESCO_BIN names the server binary and
// FRESCO_CLIENT the built package (`cargo xtask test` sets both); Chromium is Debian's.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { cpSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { frescoClientDir, launchChromium, startFaultyProxy, startFresco } from "../lib/fresco.mjs";

const here = fileURLToPath(new URL(".", import.meta.url));
const fixtures = fileURLToPath(new URL("../fixtures/", import.meta.url));
let server;
let browser;
let page;
let base;
let work;
const pageErrors = [];

before(async () => {
  const pkg = frescoClientDir();
  work = mkdtempSync(join(tmpdir(), "fresco-browser-"));
  const www = join(work, "www");
  cpSync(pkg, join(www, "pkg"), { recursive: true });
  cpSync(join(here, "scenarios.mjs"), join(www, "scenarios.mjs"));
  for (const f of ["image32.png", "mask32.png"]) cpSync(join(fixtures, "pipelines", f), join(www, "fixtures", f));
  const html = (module) => `<!doctype html><title>fresco client test</title>
<script type="module">import { scenarios } from "${module}"; window.scenarios = scenarios;</script>`;
  writeFileSync(join(www, "index.html"), html("./scenarios.mjs"));
  // What a bundler makes of it: esbuild inlines the package; its wasm goes beside the bundle,
  // where the package's `new URL("./core_bg.wasm", import.meta.url)` finds it.
  const bundled = join(www, "bundled");
  execFileSync(join(here, "../node_modules/.bin/esbuild"), [
    join(www, "scenarios.mjs"), "--bundle", "--format=esm", "--platform=browser", "--log-level=warning",
    `--outfile=${join(bundled, "scenarios.js")}`,
  ]);
  cpSync(join(pkg, "core_bg.wasm"), join(bundled, "core_bg.wasm"));
  writeFileSync(join(bundled, "index.html"), html("./scenarios.js"));
  ({ server, base } = await startFresco(["--data-dir", join(work, "data"), "--www", www, "--workers", "2", "--models-dir", fixtures]));
  browser = await launchChromium({ webgpu: false });
  page = await browser.newPage();
  page.on("pageerror", (e) => pageErrors.push(String(e)));
  await page.goto(`${base}/`);
  await page.waitForFunction(() => window.scenarios !== undefined, null, { timeout: 30000 });
});

after(async () => {
  await browser?.close();
  server?.kill("SIGTERM");
  if (work) rmSync(work, { recursive: true, force: true });
});

const run = (name, arg) => page.evaluate(([n, a]) => window.scenarios[n](a), [name, arg]);

test("browser: subscribe (polling) with logs and queue updates", async () => {
  const { result, enqueued, statuses, logs } = await run("polling");
  assert.equal(result.requestId, enqueued);
  assert.deepEqual(result.data.logs, ["loading", "step 1/2", "step 2/2"]);
  assert.ok(statuses.includes("IN_PROGRESS") && statuses.at(-1) === "COMPLETED", statuses.join());
  assert.deepEqual(logs, ["loading", "step 1/2", "step 2/2"]);
});

test("browser: subscribe (streaming) accumulates logs", async () => {
  const { result, last, logs } = await run("streaming");
  assert.deepEqual(result.data.logs, ["a", "b", "c"]);
  assert.equal(last, "COMPLETED");
  assert.deepEqual(logs, ["a", "b", "c"]);
});

test("browser: fal.run", async () => {
  const { data, requestId } = await run("run");
  assert.deepEqual(data, { sync: [1, 2, 3] });
  assert.match(requestId, /^[0-9a-f-]{36}$/);
});

test("browser: a Blob in the input is uploaded and used", async () => {
  const { url, bytes } = await run("blobInput");
  assert.ok(url.startsWith(base) && url.endsWith(".png"), url);
  assert.deepEqual(bytes, [137, 80, 78, 71, 1, 2, 3]);
});

test("browser: storage.upload round trip", async () => {
  const { url, type, text } = await run("upload");
  assert.ok(url.startsWith(base) && url.endsWith("/hello.txt"), url);
  assert.equal(type, "text/plain");
  assert.equal(text, "Hello, World!");
});

test("browser: a 91 MiB upload goes multipart and arrives whole", async () => {
  assert.deepEqual(await run("multipart"), { length: 91 * 1024 * 1024, same: true });
});

test("browser: a 422 is a ValidationError with fieldErrors", async () => {
  const e = await run("validationError");
  assert.ok(e.thrown && e.isValidationError && e.isApiError, JSON.stringify(e));
  assert.equal(e.status, 422);
  assert.deepEqual(e.fieldErrors[0].loc, ["body", "delay_ms"]);
  assert.equal(e.promptErrors, 1);
  assert.match(e.message, /delay_ms/);
});

test("browser: cancel stops a running request", async () => {
  const { status, error, result } = await run("cancel");
  assert.equal(status, "COMPLETED");
  assert.equal(error, "Request was cancelled");
  assert.ok(result.thrown && result.isApiError && result.status === 400, JSON.stringify(result));
});

test("browser: an abort rejects with AbortError and leaves the request running", async () => {
  const { outcome, error } = await run("abort");
  assert.equal(outcome.name, "AbortError");
  assert.equal(error, null);
});

test("browser: a client-side timeout rejects and cancels the request", async () => {
  const { outcome, errorType } = await run("timeout");
  assert.match(outcome.message, /Client timed out waiting for the request to complete after 300ms/);
  assert.equal(errorType, "client_cancelled");
});

test("browser: a 503 is retried after its backoff", async () => {
  const faulty = await startFaultyProxy(base);
  try {
    const { result, ms } = await run("retried503", faulty.url);
    assert.deepEqual(result, { retried: true });
    const polls = faulty.seen.filter((s) => s.includes("/status"));
    assert.ok(polls.length >= 2 && polls[0] === polls[1], faulty.seen.join("\n"));
    assert.ok(ms >= 750, `the first status retry waits 1 s ± 25 %, took ${ms} ms`);
  } finally {
    faulty.close();
  }
});

test("browser: fal-ai/inpaint on the tiny model returns an image that downloads", async () => {
  const { data, head, length, logs } = await run("inpaint", join(fixtures, "tiny-sdxl-inpaint"));
  assert.equal(data.seed, 1234);
  assert.equal([data.image.width, data.image.height].join("x"), "32x32");
  assert.deepEqual(head, [137, 80, 78, 71, 13, 10, 26, 10]);
  assert.equal(length, data.image.file_size);
  assert.ok(logs.some((m) => /^step \d+\/\d+$/.test(m)), logs.join("\n"));
});

test("browser: credentials in a page are warned about once, unless suppressed", async () => {
  assert.deepEqual(await run("credentialsWarning"), [
    "The fal credentials are exposed in the browser's environment. That's not recommended for production use cases.",
  ]);
});

test("browser: the package bundled by esbuild works the same", async () => {
  const bundledPage = await browser.newPage();
  bundledPage.on("pageerror", (e) => pageErrors.push(String(e)));
  try {
    await bundledPage.goto(`${base}/bundled/`);
    await bundledPage.waitForFunction(() => window.scenarios !== undefined, null, { timeout: 30000 });
    const inBundle = (name, arg) => bundledPage.evaluate(([n, a]) => window.scenarios[n](a), [name, arg]);
    const { result, statuses } = await inBundle("polling");
    assert.deepEqual(result.data.logs, ["loading", "step 1/2", "step 2/2"]);
    assert.equal(statuses.at(-1), "COMPLETED");
    assert.equal((await inBundle("upload")).text, "Hello, World!");
    const inpainted = await inBundle("inpaint", join(fixtures, "tiny-sdxl-inpaint"));
    assert.deepEqual(inpainted.head, [137, 80, 78, 71, 13, 10, 26, 10]);
  } finally {
    await bundledPage.close();
  }
});

test("browser: no uncaught errors in the page", () => {
  assert.deepEqual(pageErrors, []);
});
