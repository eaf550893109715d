// The real @fal-ai/client 1.10.1, unchanged, talks to `fresco serve` through its proxy route:
// the strongest check that the server speaks fal's wire protocol (queue, logs, status streams,
// storage, errors, cancel, timeouts). Run with `node --test` and FRESCO_BIN set to the binary
// (`cargo xtask test` does both).

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createHash } from "node:crypto";
import { createInterface } from "node:readline";
import { createFalClient, ValidationError, ApiError } from "@fal-ai/client";

const ECHO = "fresco/echo";
let server;
let base;
let dataDir;

before(async () => {
  const bin = process.env.FRESCO_BIN;
  assert.ok(bin, "FRESCO_BIN must name the fresco binary");
  dataDir = mkdtempSync(join(tmpdir(), "fresco-e2e-"));
  server = spawn(bin, ["serve", "--port", "0", "--data-dir", dataDir, "--workers", "2"], {
    stdio: ["ignore", "pipe", "inherit"],
    env: { ...process.env, FRESCO_LOG: "warn", FAL_KEY: "" },
  });
  const lines = createInterface({ input: server.stdout });
  base = await new Promise((resolve, reject) => {
    server.once("exit", (code) => reject(new Error(`fresco exited with ${code}`)));
    lines.once("line", (line) => resolve(line.replace("fresco serving on ", "").trim()));
  });
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

test("subscribe (polling) reports queue updates with logs and returns {data, requestId}", async () => {
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

test("subscribe (streaming) accumulates logs from the status stream", async () => {
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

test("fal.run goes through the synchronous path", async () => {
  const result = await client().run(ECHO, { input: { sync: [1, 2, 3] } });
  assert.deepEqual(result.data, { sync: [1, 2, 3] });
  assert.match(result.requestId, /^[0-9a-f-]{36}$/);
});

test("storage.upload stores a file here and its URL serves it", async () => {
  const url = await client().storage.upload(new Blob(["Hello, World!"], { type: "text/plain" }));
  assert.ok(url.startsWith(base), url);
  const res = await fetch(url);
  assert.equal(res.headers.get("content-type"), "text/plain");
  assert.equal(await res.text(), "Hello, World!");
});

test("a 91 MiB upload goes multipart and arrives whole", async () => {
  const size = 91 * 1024 * 1024;
  const bytes = new Uint8Array(size);
  for (let i = 0; i < size; i += 4096) bytes[i] = (i / 4096) % 251;
  const url = await client().storage.upload(new Blob([bytes], { type: "application/octet-stream" }));
  const got = new Uint8Array(await (await fetch(url)).arrayBuffer());
  assert.equal(got.length, size);
  const hash = (b) => createHash("sha256").update(b).digest("hex");
  assert.equal(hash(got), hash(bytes));
});

test("a Blob anywhere in the input is uploaded first and replaced by its URL", async () => {
  const image = new Blob([new Uint8Array([137, 80, 78, 71, 1, 2, 3])], { type: "image/png" });
  const result = await client().subscribe(ECHO, { input: { nested: { image_url: image } }, pollInterval: 20 });
  const url = result.data.nested.image_url;
  assert.equal(typeof url, "string");
  assert.ok(url.startsWith(base) && url.endsWith(".png"), url);
  const got = new Uint8Array(await (await fetch(url)).arrayBuffer());
  assert.deepEqual([...got], [137, 80, 78, 71, 1, 2, 3]);
});

test("a 422 from the endpoint surfaces as ValidationError with fieldErrors", async () => {
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

test("other failures surface as ApiError with their status", async () => {
  await assert.rejects(
    client().subscribe(ECHO, { input: { fail: { status: 409, detail: "conflict" } }, pollInterval: 20 }),
    (err) => err instanceof ApiError && err.status === 409 && err.body.detail === "conflict",
  );
});

test("queue.cancel stops a running request", async () => {
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

test("a client-side timeout cancels the request on the server", async () => {
  const fal = client();
  let id;
  await assert.rejects(
    fal.subscribe(ECHO, { input: { delay_ms: 20000 }, timeout: 300, pollInterval: 20, onEnqueue: (r) => (id = r) }),
    /Client timed out waiting for the request to complete after 300ms/,
  );
  const done = await fal.queue.subscribeToStatus(ECHO, { requestId: id, pollInterval: 20 });
  assert.equal(done.error_type, "client_cancelled");
});

test("the proxy refuses targets outside fal's hosts", async () => {
  const res = await fetch(`${base}/api/fal/proxy`, { headers: { "x-fal-target-url": "https://evil.example/steal" } });
  assert.equal(res.status, 400);
  assert.equal(await res.json(), "Invalid request");
});
