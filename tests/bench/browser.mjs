// `cargo xtask bench browser`'s browser side: @fresco/client's local mode in headless Chromium
// (WebGPU on SwiftShader), timed from the engine's own log lines, for each model the site's hubs
// serve. Usage: node browser.mjs SITE FRESCO_BIN STEPS MODEL_ID@HUB_PATH…
// Prints one JSON line per model: load (from "loading <model>" to "seed": device, fetches, upload
// to the GPU), first_step (from "seed" to "step 1": text and VAE encoding, and every kernel
// compiled on first use), step (the median of the steps after it), warm_first_step (the same call
// again, the model loaded and the kernels compiled), size (pixels).
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { launchChromium, startFresco } from "../lib/fresco.mjs";

const [site, bin, steps, ...models] = process.argv.slice(2);
process.env.FRESCO_BIN = bin;
const work = mkdtempSync(join(tmpdir(), "fresco-bench-"));
const { server, base } = await startFresco(["--data-dir", join(work, "data"), "--www", site]);
const browser = await launchChromium({ webgpu: true });

try {
  for (const spec of models) {
    const [id, hubPath] = spec.split("@");
    // A page of its own per model: a fresh worker, device and kernel cache.
    const page = await browser.newPage();
    await page.goto(`${base}/`);
    await page.waitForFunction(() => window.fresco?.ready, null, { timeout: 60000 });
    const result = await page.evaluate(
      async ([id, hubUrl, steps]) => {
        const { createFalClient } = await import("./pkg/index.js");
        const fal = createFalClient({ local: { hubUrl } });
        const png = async (path) => (await fetch(path)).blob();
        const [image, mask] = [await png("bench/image32.png"), await png("bench/mask32.png")];
        const call = async () => {
          let logs = [];
          const { data } = await fal.subscribe("fal-ai/inpaint", {
            input: {
              model_name: id,
              prompt: "a red fox sitting in fresh snow, photo",
              image_url: image,
              mask_url: mask,
              num_inference_steps: steps,
              seed: 0,
            },
            logs: true,
            onQueueUpdate: (u) => (logs = u.logs ?? logs),
          });
          const at = (pred) => {
            const l = logs.find((l) => pred(l.message));
            return l ? Date.parse(l.timestamp) / 1000 : NaN;
          };
          const stepTimes = logs.filter((l) => /^step \d+\//.test(l.message)).map((l) => Date.parse(l.timestamp) / 1000);
          const deltas = stepTimes.slice(1).map((t, i) => t - stepTimes[i]).sort((a, b) => a - b);
          return {
            load: at((m) => m === `loading ${id}`),
            seed: at((m) => m.startsWith("seed ")),
            first: stepTimes[0],
            step: deltas.length ? deltas[Math.floor(deltas.length / 2)] : NaN,
            steps: stepTimes.length,
            size: data.image.width,
          };
        };
        const cold = await call();
        const warm = await call();
        return {
          load: cold.seed - cold.load,
          first_step: cold.first - cold.seed,
          step: cold.step,
          warm_first_step: warm.first - warm.seed,
          steps: cold.steps,
          size: cold.size,
        };
      },
      [id, `${base}/${hubPath}`, Number(steps)],
    );
    console.log(JSON.stringify({ model: id, device: "chromium", ...result }));
    await page.close();
  }
} finally {
  await browser.close();
  server.kill("SIGTERM");
  rmSync(work, { recursive: true, force: true });
}
