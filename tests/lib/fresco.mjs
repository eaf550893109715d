// `fresco serve` for a test (FRESCO_BIN names the binary; `cargo xtask test` sets it), a faulty
// proxy to put in front of it, and the built @fresco/client package.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createServer } from "node:http";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { pathToFileURL } from "node:url";

/** The directory of the built @fresco/client package: FRESCO_CLIENT (`cargo xtask test` sets it). */
export function frescoClientDir() {
  const dir = process.env.FRESCO_CLIENT;
  assert.ok(dir, "FRESCO_CLIENT must name the built @fresco/client package (cargo xtask npm)");
  return dir;
}

/** The built @fresco/client package, imported. */
export const importFrescoClient = () => import(pathToFileURL(join(frescoClientDir(), "index.js")).href);

/** `fresco serve --port 0 <args>`; resolves with the process and its base URL once it listens. */
export async function startFresco(args) {
  const bin = process.env.FRESCO_BIN;
  assert.ok(bin, "FRESCO_BIN must name the fresco binary");
  const server = spawn(bin, ["serve", "--port", "0", ...args], {
    stdio: ["ignore", "pipe", "inherit"],
    env: { ...process.env, FRESCO_LOG: "warn", FAL_KEY: "" },
  });
  const lines = createInterface({ input: server.stdout });
  const base = await new Promise((resolve, reject) => {
    server.once("exit", (code) => reject(new Error(`fresco exited with ${code}`)));
    lines.once("line", (line) => resolve(line.replace("fresco serving on ", "").trim()));
  });
  return { server, base };
}

/**
 * A proxy in front of fresco's `/api/fal/proxy` that answers 503 to the first status poll and
 * forwards everything else; it allows any origin (a page on fresco's origin calls it). Resolves
 * with `{url, seen, close}`: `seen` lists `METHOD target` of every request that reached it.
 */
export async function startFaultyProxy(base) {
  const seen = [];
  const cors = {
    "access-control-allow-origin": "*",
    "access-control-allow-headers": "*",
    "access-control-allow-methods": "GET, POST, PUT, OPTIONS",
    "access-control-expose-headers": "*",
  };
  const server = createServer(async (req, res) => {
    if (req.method === "OPTIONS") {
      res.writeHead(204, cors);
      return res.end();
    }
    const target = req.headers["x-fal-target-url"] ?? "";
    seen.push(`${req.method} ${target}`);
    if (target.includes("/status") && seen.filter((s) => s.includes("/status")).length === 1) {
      res.writeHead(503, { "content-type": "application/json", ...cors });
      return res.end(JSON.stringify({ detail: "runner busy", error_type: "runner_scheduling_failure" }));
    }
    const chunks = [];
    for await (const c of req) chunks.push(c);
    const headers = Object.fromEntries(
      Object.entries(req.headers).filter(([k]) => !["host", "content-length", "origin", "referer"].includes(k)),
    );
    const upstream = await fetch(`${base}/api/fal/proxy`, {
      method: req.method,
      headers,
      body: chunks.length ? Buffer.concat(chunks) : undefined,
    });
    const kept = [...upstream.headers].filter(([k]) => !["content-encoding", "content-length"].includes(k) && !k.startsWith("access-control-"));
    res.writeHead(upstream.status, { ...Object.fromEntries(kept), ...cors });
    res.end(Buffer.from(await upstream.arrayBuffer()));
  });
  await new Promise((r) => server.listen(0, "127.0.0.1", r));
  return { url: `http://127.0.0.1:${server.address().port}/`, seen, close: () => server.close() };
}
