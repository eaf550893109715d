// Configuration, retries and errors of @fresco/client next to @fal-ai/client 1.10.1: each case
// runs on both clients with a `fetch` that records requests and plays scripted answers, and the
// two must agree — and agree with fal-api.md (§2, §5, §6), so that a bug shared by accident
// would still fail. Backoffs are skipped with Node's mock timers. FRESCO_CLIENT names the built
// package (`cargo xtask test` sets it).
import { test, mock } from "node:test";
import assert from "node:assert/strict";
import * as theirs from "@fal-ai/client";
import { importFrescoClient } from "../lib/fresco.mjs";

const ours = await importFrescoClient();
const clients = { "@fal-ai/client": theirs, "@fresco/client": ours };

/** A fetch that records each request and answers with `script(request, n)` (n: 1-based). */
function recording(script) {
  const requests = [];
  const fetch = async (url, init = {}) => {
    const headers = Object.fromEntries([...new Headers(init.headers)].filter(([k]) => k !== "user-agent"));
    const request = { url: String(url), method: init.method, headers, body: init.body ?? null };
    requests.push(request);
    const answer = await script(request, requests.length);
    if (answer instanceof Error) throw answer;
    const [status, body, extra = {}] = answer;
    const type = typeof body === "string" && extra.html ? "text/html" : "application/json";
    return new Response(extra.html ? body : JSON.stringify(body), {
      status,
      statusText: extra.statusText ?? "",
      headers: { "content-type": type, ...(extra.headers ?? {}) },
    });
  };
  return { fetch, requests };
}

/** Runs `promise` with every timer fast-forwarded (the clients' backoffs and polls). */
async function fastForward(start) {
  mock.timers.enable({ apis: ["setTimeout"] });
  try {
    let settled = false;
    const outcome = start().then(
      (value) => ((settled = true), { value }),
      (error) => ((settled = true), { error }),
    );
    while (!settled) {
      await new Promise((r) => setImmediate(r));
      mock.timers.tick(100_000);
    }
    return outcome;
  } finally {
    mock.timers.reset();
  }
}

/** Runs `scenario(client module)` on both clients; returns both results. */
async function both(scenario) {
  const out = {};
  for (const [name, m] of Object.entries(clients)) out[name] = await scenario(m);
  return [out["@fal-ai/client"], out["@fresco/client"]];
}

const ok = [200, { ok: true }, { headers: { "x-fal-request-id": "rid" } }];
const queued = [200, { status: "IN_QUEUE", request_id: "rid", response_url: "u", status_url: "u", cancel_url: "u" }];

test("credentials: FAL_KEY, then FAL_KEY_ID:FAL_KEY_SECRET, from the environment", async () => {
  const saved = { ...process.env };
  try {
    const [a, b] = await both(async ({ createFalClient }) => {
      const seen = [];
      for (const env of [{ FAL_KEY: "env-key" }, { FAL_KEY_ID: "id", FAL_KEY_SECRET: "secret" }, {}]) {
        delete process.env.FAL_KEY;
        delete process.env.FAL_KEY_ID;
        delete process.env.FAL_KEY_SECRET;
        Object.assign(process.env, env);
        const { fetch, requests } = recording(() => ok);
        await createFalClient({ fetch }).run("a/b", { input: {} });
        seen.push(requests[0].headers.authorization ?? null);
      }
      return seen;
    });
    assert.deepEqual(a, ["Key env-key", "Key id:secret", null]);
    assert.deepEqual(b, a);
  } finally {
    process.env = saved;
  }
});

test("credentials: a function is asked once by the config, then again on every attempt", async () => {
  const [a, b] = await both(async ({ createFalClient }) => {
    let calls = 0;
    const { fetch, requests } = recording((_, n) => (n === 1 ? [502, { detail: "x" }] : ok));
    const client = createFalClient({ fetch, credentials: () => `k${++calls}` });
    await fastForward(() => client.run("a/b", { input: {} }));
    return requests.map((r) => r.headers.authorization);
  });
  assert.deepEqual(a, ["Key k2", "Key k3"]);
  assert.deepEqual(b, a);
});

test("proxyUrl: a string is ignored in Node, {when: 'always'} applies after the user's middleware", async () => {
  const [a, b] = await both(async ({ createFalClient }) => {
    const out = [];
    for (const proxyUrl of ["/api/fal/proxy", { url: "http://proxy.test/p", when: "always" }, { url: "http://proxy.test/p", when: ({ isBrowser }) => !isBrowser }]) {
      const { fetch, requests } = recording(() => ok);
      const requestMiddleware = async (r) => ({ ...r, headers: { ...r.headers, "x-seen-url": r.url } });
      await createFalClient({ fetch, proxyUrl, requestMiddleware }).run("fal-ai/x", { input: { a: 1 } });
      out.push(requests[0]);
    }
    return out;
  });
  assert.equal(a[0].url, "https://fal.run/fal-ai/x");
  assert.equal(a[1].url, "http://proxy.test/p");
  assert.equal(a[1].headers["x-fal-target-url"], "https://fal.run/fal-ai/x");
  assert.equal(a[1].headers["x-seen-url"], "https://fal.run/fal-ai/x", "the user's middleware saw the real URL");
  assert.equal(a[2].url, "http://proxy.test/p");
  assert.deepEqual(b, a);
});

test("responseHandler: the configured one answers the calls that have none of their own", async () => {
  const [a, b] = await both(async ({ createFalClient }) => {
    const { fetch } = recording(() => ok);
    const client = createFalClient({ fetch, responseHandler: async (res) => `handled ${res.status}` });
    return [await client.queue.status("a/b", { requestId: "r" }), await client.run("a/b", { input: {} })];
  });
  assert.deepEqual(a, ["handled 200", { data: { ok: true }, requestId: "rid" }]);
  assert.deepEqual(b, a);
});

test("retries: how many attempts each operation gets for each failure", async () => {
  const cases = [
    ["run 502", (c) => c.run("a/b", { input: {} }), [502]],
    ["run 500", (c) => c.run("a/b", { input: {} }), [500]],
    ["run 429", (c) => c.run("a/b", { input: {} }), [429]],
    ["run 504 user timeout", (c) => c.run("a/b", { input: {} }), [504, { "x-fal-request-timeout-type": "user" }]],
    ["submit 503", (c) => c.queue.submit("a/b", { input: {} }), [503]],
    ["status 500", (c) => c.queue.status("a/b", { requestId: "r" }), [500]],
    ["result 504", (c) => c.queue.result("a/b", { requestId: "r" }), [504]],
    ["cancel 502", (c) => c.queue.cancel("a/b", { requestId: "r" }), [502]],
    ["run ECONNRESET", (c) => c.run("a/b", { input: {} }), new TypeError("fetch failed", { cause: { code: "ECONNRESET" } })],
    ["run Failed to fetch", (c) => c.run("a/b", { input: {} }), new TypeError("Failed to fetch")],
    ["run AbortError", (c) => c.run("a/b", { input: {} }), new DOMException("aborted", "AbortError")],
    ["configured maxRetries 1, cancel 502", (c) => c.queue.cancel("a/b", { requestId: "r" }), [502], { maxRetries: 1 }],
  ];
  const [a, b] = await both(async ({ createFalClient, ApiError }) => {
    const out = {};
    for (const [name, call, failure, retry] of cases) {
      const { fetch, requests } = recording(() =>
        failure instanceof Error ? failure : [failure[0], { detail: "failed" }, { headers: failure[1] ?? {} }],
      );
      const { error } = await fastForward(() => call(createFalClient({ fetch, retry })));
      out[name] = { attempts: requests.length, api: error instanceof ApiError, status: error?.status, userTimeout: error?.isUserTimeout };
    }
    return out;
  });
  const attempts = Object.fromEntries(Object.entries(a).map(([k, v]) => [k, v.attempts]));
  assert.deepEqual(attempts, {
    "run 502": 4, "run 500": 1, "run 429": 4, "run 504 user timeout": 1, "submit 503": 4, "status 500": 6,
    "result 504": 4, "cancel 502": 4, "run ECONNRESET": 4, "run Failed to fetch": 1, "run AbortError": 1,
    "configured maxRetries 1, cancel 502": 2,
  });
  assert.equal(a["run 504 user timeout"].userTimeout, true);
  assert.deepEqual(b, a);
});

test("errors: ApiError and ValidationError carry status, body, requestId and field errors", async () => {
  const [a, b] = await both(async ({ createFalClient, ApiError, ValidationError }) => {
    const out = [];
    const answers = [
      [422, { detail: [{ loc: ["body", "prompt"], msg: "field required", type: "missing" }] }, { headers: { "x-fal-request-id": "r1" } }],
      [422, { detail: "bad thing" }],
      [409, { detail: "conflict" }, { headers: { "x-fal-request-id": "r3" } }],
      [418, "<html>teapot</html>", { html: true, statusText: "I'm a teapot" }],
    ];
    for (const answer of answers) {
      const { fetch } = recording(() => answer);
      const { error: e } = await fastForward(() => createFalClient({ fetch }).run("a/b", { input: {} }));
      out.push({
        api: e instanceof ApiError, validation: e instanceof ValidationError, name: e.name, status: e.status,
        body: e.body, requestId: e.requestId, fieldErrors: e.fieldErrors, prompt: e.getFieldErrors?.("prompt"),
      });
    }
    return out;
  });
  assert.equal(a[0].validation && a[0].api, true);
  assert.deepEqual(a[1].fieldErrors, [{ loc: ["body"], msg: "bad thing", type: "value_error" }]);
  assert.equal(a[3].body, undefined);
  assert.deepEqual(b, a);
});

test("fresco: error messages say what went wrong where the original's are empty", async () => {
  const messages = [];
  for (const answer of [
    [422, { detail: [{ loc: ["body", "prompt"], msg: "field required", type: "missing" }] }],
    [503, { detail: "Request timed out", error_type: "request_timeout" }],
    [418, "<html></html>", { html: true, statusText: "I'm a teapot" }],
  ]) {
    const { fetch } = recording(() => answer);
    const { error } = await fastForward(() => ours.createFalClient({ fetch, retry: { maxRetries: 0 } }).queue.cancel("a/b", { requestId: "r" }));
    messages.push(error.message);
  }
  assert.deepEqual(messages, ["prompt: field required", "Request timed out", "HTTP 418: I'm a teapot"]);
});

test("submit: the queue headers, and a bad startTimeout refused before anything is sent", async () => {
  const [a, b] = await both(async ({ createFalClient }) => {
    const { fetch, requests } = recording(() => queued);
    const client = createFalClient({ fetch });
    await client.queue.submit("a/b", { input: { x: 1 }, startTimeout: 2.5, hint: "gpu", storageSettings: { expiresIn: "never" } });
    const refused = [];
    for (const startTimeout of [1, "10", Number.NaN]) {
      const { error } = await fastForward(() => client.queue.submit("a/b", { input: {}, startTimeout }));
      refused.push(error.message);
    }
    return { headers: requests[0].headers, refused, sent: requests.length };
  });
  assert.equal(a.headers["x-fal-request-timeout"], "2.5");
  assert.equal(a.headers["x-fal-queue-priority"], "normal");
  assert.equal(a.headers["x-fal-object-lifecycle-preference"], undefined, "'never' alone says nothing");
  assert.deepEqual(a.refused, ["Timeout must be greater than 1 seconds", "Timeout must be a number, got 10", "Timeout must be a number, got NaN"]);
  assert.equal(a.sent, 1);
  assert.deepEqual(b, a);
});
