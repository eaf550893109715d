// The suite (suite.mjs) driven by our npm module, @fresco/client, as `cargo xtask npm` builds it:
// FRESCO_CLIENT names the package's directory (`cargo xtask test` sets it).
import assert from "node:assert/strict";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { clientSuite } from "./suite.mjs";

const dir = process.env.FRESCO_CLIENT;
assert.ok(dir, "FRESCO_CLIENT must name the built @fresco/client package (cargo xtask npm)");
clientSuite("@fresco/client", await import(pathToFileURL(join(dir, "index.js")).href));
