// One suite, run twice against `fresco serve` through its proxy route: by the real
// @fal-ai/client 1.10.1 (fal-client.test.mjs) — the strongest check that the server speaks fal's
// wire protocol — and by our npm module @fresco/client (fresco-client.test.mjs), which must behave
// the same. Run with `node --test` and FRESCO_BIN set to the binary (`cargo xtask test` does it).

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createHash } from "node:crypto";
import { fileURLToPath } from "node:url";
import { startFaultyProxy, startFresco } from "../lib/fresco.mjs";

const FIXTURES = fileURLToPath(new URL("../fixtures/", import.meta.url));

/** Registers every test for one client module (`{createFalClient, ValidationError, ApiError}`). */
export function clientSuite(label, { createFalClient, ValidationError, ApiError }) {
  const ECHO = "fresco/echo";
  let server;
  let base;
  let dataDir;

  before(async () => {
    dataDir = mkdtempSync(join(tmpdir(), "fresco-e2e-"));
    ({ server, base } = await startFresco(["--data-dir", dataDir, "--workers", "2", "--models-dir", FIXTURES]));
  });

  after(() => {
    server?.kill("SIGTERM");
    if (dataDir) rmSync(dataDir, { recursive: true, force: true });
  });

  // What a web page does: everything goes through the proxy route. `when: "always"` because this
  // is Node, where a plain string proxyUrl is ignored (as in the browser-less original).
  function client() {
    return createFalClient({ proxyUrl: { url: `${base}/api/fal/proxy`, when: "always" } });
  }

  test(`${label}: subscribe (polling) reports queue updates with logs and returns {data, requestId}`, async () => {
    const fal = client();
    const updates = [];
    let enqueued;
    const input = { prompt: "a cat", delay_ms: 400, logs: ["loading", "step 1/2", "step 2/2"] };
    const result = await fal.subscribe(ECHO, {
      input,
      logs: true,
      pollInterval: 20,
      onEnqueue: (id) => (enqueued = id),
      onQueueUpdate: (u) => updates.push(u),
    });
    assert.deepEqual(result.data, input);
    assert.equal(result.requestId, enqueued);
    const statuses = updates.map((u) => u.status);
    assert.ok(statuses.includes("IN_PROGRESS"), statuses.join());
    assert.equal(statuses.at(-1), "COMPLETED");
    const final = updates.at(-1);
    assert.deepEqual(final.logs.map((l) => l.message), input.logs);
    assert.equal(typeof final.metrics.inference_time, "number");
  });

  test(`${label}: subscribe (streaming) accumulates logs from the status stream`, async () => {
    const fal = client();
    const updates = [];
    const result = await fal.subscribe(ECHO, {
      input: { delay_ms: 300, logs: ["a", "b", "c"] },
      logs: true,
      mode: "streaming",
      onQueueUpdate: (u) => updates.push(u),
    });
    assert.deepEqual(result.data.logs, ["a", "b", "c"]);
    const withLogs = updates.filter((u) => u.logs && u.logs.length);
    assert.deepEqual(withLogs.at(-1).logs.map((l) => l.message), ["a", "b", "c"]);
    assert.equal(updates.at(-1).status, "COMPLETED");
  });

  test(`${label}: fal.run goes through the synchronous path`, async () => {
    const result = await client().run(ECHO, { input: { sync: [1, 2, 3] } });
    assert.deepEqual(result.data, { sync: [1, 2, 3] });
    assert.match(result.requestId, /^[0-9a-f-]{36}$/);
  });

  test(`${label}: storage.upload stores a file here and its URL serves it`, async () => {
    const url = await client().storage.upload(new Blob(["Hello, World!"], { type: "text/plain" }));
    assert.ok(url.startsWith(base), url);
    const res = await fetch(url);
    assert.equal(res.headers.get("content-type"), "text/plain");
    assert.equal(await res.text(), "Hello, World!");
  });

  test(`${label}: a 91 MiB upload goes multipart and arrives whole`, async () => {
    const size = 91 * 1024 * 1024;
    const bytes = new Uint8Array(size);
    for (let i = 0; i < size; i += 4096) bytes[i] = (i / 4096) % 251;
    const url = await client().storage.upload(new Blob([bytes], { type: "application/octet-stream" }));
    const got = new Uint8Array(await (await fetch(url)).arrayBuffer());
    assert.equal(got.length, size);
    const hash = (b) => createHash("sha256").update(b).digest("hex");
    assert.equal(hash(got), hash(bytes));
  });

  test(`${label}: a Blob anywhere in the input is uploaded first and replaced by its URL`, async () => {
    const image = new Blob([new Uint8Array([137, 80, 78, 71, 1, 2, 3])], { type: "image/png" });
    const result = await client().subscribe(ECHO, { input: { nested: { image_url: image } }, pollInterval: 20 });
    const url = result.data.nested.image_url;
    assert.equal(typeof url, "string");
    assert.ok(url.startsWith(base) && url.endsWith(".png"), url);
    const got = new Uint8Array(await (await fetch(url)).arrayBuffer());
    assert.deepEqual([...got], [137, 80, 78, 71, 1, 2, 3]);
  });

  test(`${label}: a 422 from the endpoint surfaces as ValidationError with fieldErrors`, async () => {
    await assert.rejects(
      client().subscribe(ECHO, { input: { delay_ms: "soon" }, pollInterval: 20 }),
      (err) => {
        assert.ok(err instanceof ValidationError, String(err));
        assert.equal(err.status, 422);
        assert.deepEqual(err.fieldErrors[0].loc, ["body", "delay_ms"]);
        assert.equal(err.getFieldErrors("delay_ms").length, 1);
        assert.match(err.requestId, /^[0-9a-f-]{36}$/);
        return true;
      },
    );
  });

  test(`${label}: other failures surface as ApiError with their status`, async () => {
    await assert.rejects(
      client().subscribe(ECHO, { input: { fail: { status: 409, detail: "conflict" } }, pollInterval: 20 }),
      (err) => err instanceof ApiError && err.status === 409 && err.body.detail === "conflict",
    );
  });

  test(`${label}: queue.cancel stops a running request`, async () => {
    const fal = client();
    const { request_id } = await fal.queue.submit(ECHO, { input: { delay_ms: 30000 } });
    for (let i = 0; i < 200; i++) {
      const s = await fal.queue.status(ECHO, { requestId: request_id });
      if (s.status === "IN_PROGRESS") break;
      await new Promise((r) => setTimeout(r, 10));
    }
    await fal.queue.cancel(ECHO, { requestId: request_id });
    const done = await fal.queue.subscribeToStatus(ECHO, { requestId: request_id, pollInterval: 20 });
    assert.equal(done.status, "COMPLETED");
    assert.equal(done.error, "Request was cancelled");
    await assert.rejects(fal.queue.result(ECHO, { requestId: request_id }), (e) => e instanceof ApiError && e.status === 400);
  });

  test(`${label}: a client-side timeout cancels the request on the server`, async () => {
    const fal = client();
    let id;
    await assert.rejects(
      fal.subscribe(ECHO, { input: { delay_ms: 20000 }, timeout: 300, pollInterval: 20, onEnqueue: (r) => (id = r) }),
      /Client timed out waiting for the request to complete after 300ms/,
    );
    const done = await fal.queue.subscribeToStatus(ECHO, { requestId: id, pollInterval: 20 });
    assert.equal(done.error_type, "client_cancelled");
  });

  test(`${label}: the proxy refuses targets outside fal's hosts`, async () => {
    const res = await fetch(`${base}/api/fal/proxy`, { headers: { "x-fal-target-url": "https://evil.example/steal" } });
    assert.equal(res.status, 400);
    assert.equal(await res.json(), "Invalid request");
  });

  test(`${label}: an abort stops a subscription without cancelling the request`, async () => {
    const fal = client();
    const controller = new AbortController();
    let id;
    const done = fal.subscribe(ECHO, {
      input: { delay_ms: 2000 },
      pollInterval: 20,
      abortSignal: controller.signal,
      onEnqueue: (r) => (id = r),
      onQueueUpdate: (u) => u.status === "IN_PROGRESS" && controller.abort(),
    });
    await assert.rejects(done, (e) => e.name === "AbortError");
    const status = await fal.queue.subscribeToStatus(ECHO, { requestId: id, pollInterval: 20 });
    assert.equal(status.status, "COMPLETED");
    assert.equal(status.error, undefined, "the request ran to its end");
  });

  test(`${label}: a 503 on a status poll is retried and the subscription succeeds`, async () => {
    const faulty = await startFaultyProxy(base);
    try {
      const fal = createFalClient({ proxyUrl: { url: faulty.url, when: "always" } });
      const result = await fal.subscribe(ECHO, { input: { retried: true }, pollInterval: 20 });
      assert.deepEqual(result.data, { retried: true });
      const polls = faulty.seen.filter((s) => s.includes("/status"));
      assert.ok(polls.length >= 2, faulty.seen.join("\n"));
      assert.equal(polls[0], polls[1], "the same status URL, asked again after the 503");
    } finally {
      faulty.close();
    }
  });

  test(`${label}: fal-ai/inpaint on the tiny model returns an image that downloads`, async () => {
    const fal = client();
    const png = (name) => new Blob([readFileSync(join(FIXTURES, "pipelines", name))], { type: "image/png" });
    const updates = [];
    const result = await fal.subscribe("fal-ai/inpaint", {
      input: {
        model_name: join(FIXTURES, "tiny-sdxl-inpaint"),
        image_url: png("image32.png"),
        mask_url: png("mask32.png"),
        prompt: "a red fox sitting in fresh snow",
        num_inference_steps: 3,
        seed: 1234,
      },
      logs: true,
      pollInterval: 50,
      onQueueUpdate: (u) => updates.push(u),
    });
    assert.equal(result.data.seed, 1234);
    const image = result.data.image;
    assert.equal(image.content_type, "image/png");
    assert.equal([image.width, image.height].join("x"), "32x32");
    const bytes = new Uint8Array(await (await fetch(image.url)).arrayBuffer());
    assert.deepEqual([...bytes.slice(0, 8)], [137, 80, 78, 71, 13, 10, 26, 10]);
    assert.equal(bytes.length, image.file_size);
    const logs = updates.at(-1).logs.map((l) => l.message);
    // A step log per denoising step (inpainting's strength runs fewer than asked), up to the last.
    const steps = logs.filter((m) => /^step \d+\/\d+$/.test(m));
    assert.ok(steps.length > 0, logs.join("\n"));
    const [k, n] = steps.at(-1).slice(5).split("/");
    assert.equal(k, n, logs.join("\n"));
  });
}
