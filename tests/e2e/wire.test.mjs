// The wire test: the same sequence of calls, made once by the real @fal-ai/client 1.10.1 and once
// by @fresco/client, against a recording server standing in for fal behind a proxy. What each
// sends — methods, URLs (the proxy's x-fal-target-url), headers, bodies, retries, polls, uploads —
// must be equal, but for the deliberate differences the README lists that show on the wire: the
// User-Agent names fresco. FRESCO_CLIENT names the built package (`cargo xtask test` sets it).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { createServer } from "node:http";
import * as theirs from "@fal-ai/client";
import { importFrescoClient } from "../lib/fresco.mjs";

const ours = await importFrescoClient();

// Headers that say nothing about the client (transport, the runtime's fetch).
const IGNORED = new Set(["host", "connection", "content-length", "accept-encoding", "accept-language", "sec-fetch-mode", "transfer-encoding"]);
let recorder;
let base;
let log = [];
let counters = new Map();

const json = (res, status, body, headers = {}) => {
  res.writeHead(status, { "content-type": "application/json", ...headers });
  res.end(JSON.stringify(body));
};
const count = (key) => {
  const n = (counters.get(key) ?? 0) + 1;
  counters.set(key, n);
  return n;
};

function respond(req, res, target, body) {
  const t = target ? new URL(target) : null;
  const path = t ? t.host + t.pathname : req.url;
  const queueStatus = (status, extra) => ({
    status, request_id: "rid", response_url: "u", status_url: "u", cancel_url: "u", ...extra,
  });
  if (!t) {
    // Direct requests: storage PUTs, multipart parts and completion, the client-mode stream.
    if (req.url.startsWith("/direct/stream")) {
      res.writeHead(200, { "content-type": "text/event-stream" });
      return res.end('data: {"n":1}\n\ndata: {"n":2}\n\n');
    }
    const part = req.url.match(/^\/upload\/big\/(\d+)\?/);
    if (part) return json(res, 200, { partNumber: Number(part[1]), etag: `e${part[1]}` });
    return json(res, 200, {});
  }
  if (path.startsWith("rest.fal.ai/storage/upload/initiate")) {
    const multipart = path.endsWith("multipart");
    const name = JSON.parse(body).file_name;
    return json(res, 200, {
      upload_url: `${base}/upload/${multipart ? "big" : "small"}?sig=${encodeURIComponent(name)}`,
      file_url: `https://v3.fal.media/files/${name}`,
    });
  }
  if (path === "rest.fal.ai/tokens/") return json(res, 200, "tok");
  if (path.endsWith("/flaky") && count("flaky") === 1) return json(res, 502, { detail: "bad gateway" });
  if (path.endsWith("/invalid")) {
    return json(res, 422, { detail: [{ loc: ["body", "prompt"], msg: "field required", type: "missing" }] }, { "x-fal-request-id": "rid-422" });
  }
  if (path.endsWith("/stream") && t.host === "fal.run") {
    res.writeHead(200, { "content-type": "text/event-stream", "x-fal-request-id": "rid-stream" });
    return res.end('data: {"partial":1}\n\ndata: {"final":true}\n\n');
  }
  if (path.endsWith("/status/stream")) {
    res.writeHead(200, { "content-type": "text/event-stream" });
    return res.end(
      [
        queueStatus("IN_PROGRESS", { logs: [{ message: "a" }] }),
        queueStatus("IN_PROGRESS", { logs: [{ message: "b" }] }),
        queueStatus("COMPLETED", { logs: [] }),
      ].map((s) => `data: ${JSON.stringify(s)}\n\n`).join(""),
    );
  }
  if (path.endsWith("/status")) {
    const n = count(`status ${path}`);
    const status = n === 1 ? queueStatus("IN_QUEUE", { queue_position: 0 }) : n === 2
      ? queueStatus("IN_PROGRESS", { logs: [] }) : queueStatus("COMPLETED", { logs: [], metrics: { inference_time: 1 } });
    return json(res, n >= 3 ? 200 : 202, status);
  }
  if (path.endsWith("/cancel")) return json(res, 202, { status: "CANCELLATION_REQUESTED" });
  if (t.host === "queue.fal.run" && path.includes("/requests/")) return json(res, 200, { out: 1 }, { "x-fal-request-id": "rid" });
  if (t.host === "queue.fal.run") return json(res, 200, queueStatus("IN_QUEUE", { queue_position: 0 }));
  return json(res, 200, { ran: path }, { "x-fal-request-id": "rid-run" });
}

before(async () => {
  recorder = createServer(async (req, res) => {
    const chunks = [];
    for await (const c of req) chunks.push(c);
    const raw = Buffer.concat(chunks);
    const target = req.headers["x-fal-target-url"];
    const headers = Object.fromEntries(
      Object.entries(req.headers).filter(([k]) => !IGNORED.has(k)).map(([k, v]) => [k, k === "user-agent" ? "<user-agent>" : v]),
    );
    const text = raw.length > 4096 ? `<${raw.length} bytes>` : raw.toString("utf8").replace(/\b\d{13}\./g, "<now>.");
    log.push({ method: req.method, url: req.url.replace(/\d{13}\./g, "<now>."), headers, body: text });
    respond(req, res, target, raw.toString("utf8"));
  });
  await new Promise((r) => recorder.listen(0, "127.0.0.1", r));
  base = `http://127.0.0.1:${recorder.address().port}`;
});

after(() => recorder?.close());

/** The sequence of calls, for one client module; returns what the recorder saw. */
async function sequence({ createFalClient, ValidationError }) {
  log = [];
  counters = new Map();
  const fal = createFalClient({
    credentials: "KEY:SECRET",
    proxyUrl: { url: `${base}/api/fal/proxy`, when: "always" },
    retry: { baseDelay: 1, maxDelay: 5 },
  });
  await fal.run("fal-ai/flux/dev", { input: { prompt: "x" }, startTimeout: 30, storageSettings: { expiresIn: "1h" } });
  await fal.run("fal-ai/flux/dev", { method: "get", path: "/foo", input: { prompt: "a b", n: 2, list: [1, 2] } });
  await fal.run("12345-my-app", { input: {} });
  await fal.run("https://my-app.fal.run/custom", { input: { a: 1 } });
  await fal.run("fal-ai/x/flaky", { input: { retry: true } });
  await assert.rejects(fal.run("fal-ai/x/invalid", { input: {} }), (e) => e instanceof ValidationError && e.requestId === "rid-422");
  await fal.queue.submit("fal-ai/flux/dev", {
    input: { prompt: "p" },
    webhookUrl: "https://example.com/hook?x=1",
    priority: "low",
    hint: "h1",
    startTimeout: 10,
    headers: { "X-Custom": "v", "X-Fal-Queue-Priority": "bogus" },
    storageSettings: { expiresIn: 123, initialAcl: { default: "forbid", rules: [{ user: "u", decision: "allow" }] } },
  });
  await fal.queue.status("fal-ai/flux/dev", { requestId: "rid", logs: true });
  await fal.queue.result("fal-ai/flux/dev", { requestId: "rid" });
  await fal.queue.cancel("workflows/owner/wf/x", { requestId: "rid" });
  const updates = [];
  await fal.subscribe("fal-ai/poll/dev", { input: { a: 1 }, logs: true, pollInterval: 5, onQueueUpdate: (u) => updates.push(u.status) });
  await fal.subscribe("fal-ai/streamed", { input: { b: 2 }, mode: "streaming", logs: true, onQueueUpdate: (u) => updates.push(u.status) });
  const stream = await fal.stream("fal-ai/llm", { input: { prompt: "hi" } });
  const events = [];
  for await (const e of stream) events.push(e);
  const last = await stream.done();
  const direct = await fal.stream("fal-ai/llm", { url: `${base}/direct/stream`, connectionMode: "client", tokenProvider: async (app) => `tok-${app}`, input: { q: 1 } });
  const directLast = await direct.done();
  await fal.storage.upload(new File(["Hello"], "hello.txt", { type: "text/plain" }), { lifecycle: { expiresIn: "1d" } });
  await fal.storage.upload(new Blob([new Uint8Array(95 * 1024 * 1024)], { type: "image/png" }));
  await fal.run("fal-ai/with-file", { input: { image_url: new Blob(["png"], { type: "image/png" }), keep: "data:image/png;base64,AA" } });
  return { log, updates, events, last, directLast };
}

test("@fresco/client sends what @fal-ai/client 1.10.1 sends", async () => {
  const expected = await sequence(theirs);
  const actual = await sequence(ours);
  assert.ok(expected.log.length > 30, `the sequence recorded ${expected.log.length} requests`);
  for (let i = 0; i < Math.max(expected.log.length, actual.log.length); i++) {
    assert.deepEqual(actual.log[i], expected.log[i], `request ${i + 1} of the sequence differs`);
  }
  assert.deepEqual(actual.updates, expected.updates);
  assert.deepEqual(actual.events, expected.events);
  assert.deepEqual(actual.last, expected.last);
  assert.deepEqual(actual.directLast, expected.directLast);
});

test("the User-Agent is the only header that differs, and it names fresco", async () => {
  const seen = [];
  const fetch = async (url, init) => {
    seen.push(new Headers(init.headers).get("user-agent"));
    return new Response("{}", { headers: { "content-type": "application/json" } });
  };
  await theirs.createFalClient({ credentials: "K", fetch }).run("a/b", { input: {} });
  await ours.createFalClient({ credentials: "K", fetch }).run("a/b", { input: {} });
  assert.equal(seen[0], "@fal-ai/client/1.10.1");
  assert.match(seen[1], /^@fal-ai\/client\/1\.10\.1 fresco\/\d+\.\d+\.\d+$/);
});
