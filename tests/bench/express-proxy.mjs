// @fal-ai/server-proxy's Express adapter, set up as its README says (express.json() first), with
// the allow-list widened to the benchmark's local upstream. `cargo xtask bench proxy` runs it.
import express from "express";
import { createHandler, route } from "@fal-ai/server-proxy/express";

const port = Number(process.env.PORT ?? 0);
const upstream = process.env.UPSTREAM_HOST; // e.g. 127.0.0.1:9000
const app = express();
app.use(express.json());
app.all(route, createHandler({ allowedUrlPatterns: [`${upstream}/**`], allowUnauthorizedRequests: true, allowedEndpoints: ["**"] }));
const server = app.listen(port, "127.0.0.1", () => {
  console.log(`express proxy on http://127.0.0.1:${server.address().port}`);
});
