// The suite (suite.mjs) driven by the real @fal-ai/client 1.10.1, unchanged.
import * as falClient from "@fal-ai/client";
import { clientSuite } from "./suite.mjs";

clientSuite("@fal-ai/client", falClient);
