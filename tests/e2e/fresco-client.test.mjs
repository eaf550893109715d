// The suite (suite.mjs) driven by our npm module, @fresco/client, as `cargo xtask npm` builds it:
// FRESCO_CLIENT names the package's directory (`cargo xtask test` sets it).
import { importFrescoClient } from "../lib/fresco.mjs";
import { clientSuite } from "./suite.mjs";

clientSuite("@fresco/client", await importFrescoClient());
