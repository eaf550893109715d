// Storage (fal-js's storage.ts): uploads to fal's CDN, single or in parts, the Blobs of an input
// uploaded and replaced by their URLs, and the `StorageSettings` lifecycle headers.

import * as core from "./core.js";
import { dispatchRequest } from "./request.js";

// Files larger than this are uploaded in 10 MiB parts.
const MULTIPART_THRESHOLD = 90 * 1024 * 1024;
const MULTIPART_PART_SIZE = 10 * 1024 * 1024;
// `StorageSettings.expiresIn` names, in seconds (`never`: no expiration).
const EXPIRATION_SECONDS = { never: undefined, immediate: 60, "1h": 3600, "1d": 86400, "7d": 604800, "30d": 2592000, "1y": 31536000 };

const isPlainObject = (v) => !!v && Object.getPrototypeOf(v) === Object.prototype;

/** `StorageSettings` → the JSON of a lifecycle header, or undefined when it says nothing. */
function lifecycleJson(settings) {
  if (!settings) return undefined;
  const { expiresIn, initialAcl } = settings;
  if (typeof expiresIn === "string" && !(expiresIn in EXPIRATION_SECONDS)) {
    // fresco: the original sends no expiration for a name it does not know.
    throw new Error(`Unknown expiresIn "${expiresIn}": use never, immediate, 1h, 1d, 7d, 30d, 1y or seconds`);
  }
  const seconds = typeof expiresIn === "string" ? EXPIRATION_SECONDS[expiresIn] : expiresIn;
  const value = {};
  if (seconds !== undefined) value.expiration_duration_seconds = seconds;
  if (initialAcl) value.initial_acl = initialAcl;
  return Object.keys(value).length ? JSON.stringify(value) : undefined;
}

export function lifecycleHeader(name, settings) {
  const json = lifecycleJson(settings);
  return json ? { [name]: json } : {};
}

/** `{now}.{subtype}`, the subtype cut at `-` or `;`: the name of an upload whose Blob has none. */
function defaultFileName(contentType) {
  const slash = contentType.indexOf("/");
  // fresco: a content type without "/" is a clear error (the original fails on `undefined`).
  if (slash < 0) throw new Error(`Cannot name an upload of content type "${contentType}": it has no "/"`);
  return `${Date.now()}.${contentType.slice(slash + 1).split(/[-;]/)[0]}`;
}

export function createStorageClient(config) {
  const initiate = (file, contentType, multipart, lifecycle) =>
    dispatchRequest({
      method: "POST",
      targetUrl: core.storageInitiateUrl(multipart),
      input: { content_type: contentType, file_name: file.name || defaultFileName(contentType) },
      config,
      headers: lifecycleHeader("X-Fal-Object-Lifecycle", lifecycle),
    });

  async function upload(file, options = {}) {
    const contentType = file.type || "application/octet-stream";
    const multipart = file.size > MULTIPART_THRESHOLD;
    const { upload_url, file_url } = await initiate(file, contentType, multipart, options.lifecycle);
    const { fetch, responseHandler } = config;
    if (!multipart) {
      const response = await fetch(upload_url, {
        method: "PUT",
        body: file,
        headers: { "Content-Type": contentType },
      });
      await responseHandler(response);
      return file_url;
    }
    // Parts go one after another, each tried three times at once before the upload fails.
    const size = MULTIPART_PART_SIZE;
    const parts = Math.ceil(file.size / size);
    const uploaded = [];
    for (let n = 1; n <= parts; n++) {
      const chunk = file.slice((n - 1) * size, n * size);
      for (let attempt = 1; ; attempt++) {
        try {
          const response = await fetch(core.multipartUrl(upload_url, n), { method: "PUT", body: chunk });
          const { etag } = await responseHandler(response);
          uploaded.push({ partNumber: n, etag });
          break;
        } catch (error) {
          if (attempt >= 3) throw new Error("Part upload failed, retries exhausted", { cause: error });
        }
      }
    }
    const response = await fetch(core.multipartUrl(upload_url, 0), {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ parts: uploaded }),
    });
    await responseHandler(response);
    return file_url;
  }

  /** Every `Blob` (and `File`) anywhere in arrays and plain objects, uploaded and replaced by its
   * URL; all uploads run at once. Everything else is left as it is. */
  async function transformInput(input) {
    if (Array.isArray(input)) return Promise.all(input.map(transformInput));
    if (typeof Blob !== "undefined" && input instanceof Blob) return upload(input);
    if (isPlainObject(input)) {
      const entries = await Promise.all(
        Object.entries(input).map(async ([key, value]) => [key, await transformInput(value)]),
      );
      return Object.fromEntries(entries);
    }
    return input;
  }

  return { upload, transformInput };
}
