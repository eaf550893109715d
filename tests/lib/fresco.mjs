// `fresco serve` for a test (FRESCO_BIN names the binary; `cargo xtask test` sets it), a faulty
// proxy to put in front of it, and the built @fresco/client package.
import assert from "node:assert/strict";
import { execFileSync, spawn } from "node:child_process";
import { createServer } from "node:http";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { pathToFileURL } from "node:url";

/**
 * Debian's Chromium, headless, through playwright-core; `webgpu` turns on WebGPU (SwiftShader,
 * a real WebGPU implementation on the CPU). Resolves with the browser.
 */
export async function launchChromium({ webgpu = false } = {}) {
  const { chromium } = await import("playwright-core");
  return chromium.launch({
    executablePath: execFileSync("which", ["chromium"]).toString().trim(),
    args: [
      "--no-sandbox", "--disable-background-networking", "--disable-component-update", "--disable-sync",
      "--no-first-run", "--disable-quic", ...(webgpu ? ["--enable-unsafe-webgpu"] : []),
    ],
  });
}

/** The directory of the built @fresco/client package: FRESCO_CLIENT (`cargo xtask test` sets it). */
export function frescoClientDir() {
  const dir = process.env.FRESCO_CLIENT;
  assert.ok(dir, "FRESCO_CLIENT must name the built @fresco/client package (cargo xtask npm)");
  return dir;
}

/** The built @fresco/client package, imported. */
export const importFrescoClient = () => import(pathToFileURL(join(frescoClientDir(), "index.js")).href);

/**
 * `fresco serve --port 0 --echo <args>` (the tests use the queue's test endpoint, which a server
 * serves only when asked); resolves with the process and its base URL once it listens.
 */
export async function startFresco(args) {
  const bin = process.env.FRESCO_BIN;
  assert.ok(bin, "FRESCO_BIN must name the fresco binary");
  const server = spawn(bin, ["serve", "--port", "0", "--echo", ...args], {
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

/**
 * A hub laid out as huggingface.co (`/{id}/resolve/{revision}/{file}`) over `root`
 * (tests/fixtures/hub), on its own origin: CORS with `Range` allowed, ranges (`bytes=a-b`,
 * `bytes=a-`) answered with 206 and `Content-Range` as huggingface.co does. Faults for the local
 * mode's tests, each under its own model id, the files otherwise `fresco/tiny-sdxl-inpaint`'s:
 * - `cutOnce`: the first whole download of the file whose path ends with it stops halfway (the
 *   connection is destroyed);
 * - `oversized`: every safetensors file claims a size (1 PB) no storage quota holds — in
 *   `Content-Range` for a range within its real bytes, in `Content-Length` for a download, which
 *   then sends nothing;
 * - `wide`: the UNet's safetensors header lists one tensor of 400M f32 elements (1.6 GB), more
 *   than a WebGPU device binds; its data is never there.
 * Resolves with `{url, seen, close}`: `seen` lists `{path, range}` of every GET.
 */
export async function startHub({ root, cutOnce, oversized, wide }) {
  const { createReadStream, statSync } = await import("node:fs");
  const seen = [];
  let cut = false;
  const cors = {
    "access-control-allow-origin": "*",
    "access-control-allow-headers": "range",
    "access-control-allow-methods": "GET, HEAD, OPTIONS",
    "access-control-expose-headers": "content-length, content-range, accept-ranges",
  };
  const TINY = "/fresco/tiny-sdxl-inpaint/";
  const wideHeader = (() => {
    const numel = 400_000_000;
    let json = JSON.stringify({ "conv_in.weight": { dtype: "F32", shape: [numel], data_offsets: [0, numel * 4] } });
    json = json.padEnd(Math.ceil(json.length / 8) * 8, " ");
    const length = Buffer.alloc(8);
    length.writeBigUInt64LE(BigInt(json.length));
    return { bytes: Buffer.concat([length, Buffer.from(json)]), size: 8 + json.length + numel * 4 };
  })();
  const server = createServer((req, res) => {
    if (req.method === "OPTIONS") {
      res.writeHead(204, cors);
      return res.end();
    }
    const path = decodeURIComponent(new URL(req.url, "http://hub").pathname);
    const range = req.headers.range ?? null;
    seen.push({ path, range });
    const faulty = [oversized, wide].find((id) => id && path.startsWith(`/${id}/`));
    const file = join(root, faulty ? path.replace(`/${faulty}/`, TINY) : path);
    let size;
    try {
      const st = statSync(file);
      if (!st.isFile()) throw new Error("not a file");
      size = st.size;
    } catch {
      res.writeHead(404, { "content-type": "application/json", ...cors });
      return res.end(JSON.stringify({ error: "Entry not found" }));
    }
    // What the file is, as this hub tells it: its bytes (a file, or a buffer), and its size.
    let source = { file, size, claimed: size };
    if (faulty && faulty === oversized && path.endsWith(".safetensors")) source.claimed = 1e15;
    if (faulty && faulty === wide && /\/unet\/[^/]*\.safetensors$/.test(path)) {
      source = { buffer: wideHeader.bytes, size: wideHeader.bytes.length, claimed: wideHeader.size };
    }
    const [, from, to] = /^bytes=(\d+)-(\d*)$/.exec(range ?? "") ?? [];
    const start = Number(from ?? 0);
    if (!to && source.claimed > source.size) {
      // A download of bytes the file does not really have: the headers, then nothing, a cut.
      res.writeHead(200, { "content-length": String(source.claimed), "accept-ranges": "bytes", ...cors });
      res.flushHeaders();
      return setTimeout(() => res.destroy(), 2000);
    }
    const end = Math.min(to ? Number(to) : Infinity, source.size - 1);
    const headers = { "accept-ranges": "bytes", "content-length": String(end - start + 1), ...cors };
    if (range) res.writeHead(206, { ...headers, "content-range": `bytes ${start}-${end}/${source.claimed}` });
    else res.writeHead(200, headers);
    if (source.buffer) return res.end(source.buffer.subarray(start, end + 1));
    if (cutOnce && !cut && !range && path.endsWith(cutOnce)) {
      cut = true;
      // Half the file, then the connection drops.
      const half = createReadStream(file, { start: 0, end: Math.floor(size / 2) - 1 });
      half.on("data", (chunk) => res.write(chunk));
      // Closed (not reset) once the browser has had time to read what was sent.
      half.on("end", () => setTimeout(() => res.socket.end(), 500));
      return;
    }
    createReadStream(file, { start, end }).pipe(res);
  });
  await new Promise((r) => server.listen(0, "127.0.0.1", r));
  return { url: `http://127.0.0.1:${server.address().port}`, seen, close: () => server.close() };
}
