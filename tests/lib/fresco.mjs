// Starting `fresco serve` for a test: FRESCO_BIN names the binary (`cargo xtask test` sets it).
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createInterface } from "node:readline";

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
