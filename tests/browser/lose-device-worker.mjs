// @fresco/client's engine worker (pkg/engine-worker.js), with a way to lose its GPU device as a
// crashed GPU process or a driver reset would: the devices the engine opens are kept (through
// GPUAdapter.requestDevice), and destroyed
// - after the first step of a call whose prompt contains "[lose the device]", or
// - when the test calls `self.loseDevice()` (Playwright's worker.evaluate) while nothing runs.
// local.test.mjs hands it to the client as `local.workerUrl`. The engine worker's module only
// sets its message handler when it is evaluated (before this one); it opens a device on its
// first call, after the patches below are in place.
import "./pkg/engine-worker.js";

const devices = [];
const requestDevice = GPUAdapter.prototype.requestDevice;
GPUAdapter.prototype.requestDevice = async function (...args) {
  const device = await requestDevice.apply(this, args);
  devices.push(device);
  return device;
};
self.loseDevice = () => {
  for (const device of devices) device.destroy();
  return devices.length;
};

const armed = new Set();
self.addEventListener("message", ({ data }) => {
  if (data.type === "run" && String(data.input?.prompt).includes("[lose the device]")) armed.add(data.id);
});
const post = self.postMessage.bind(self);
self.postMessage = (message, transfer) => {
  post(message, transfer);
  if (message.type === "log" && armed.has(message.id) && message.message.startsWith("step 1/")) {
    armed.delete(message.id);
    self.loseDevice();
  }
};
