// A KServe v2 REST client in JavaScript (Node >= 18, no packages), written from README.md's
// "HTTP" section only: readiness, model metadata, inference with JSON tensors and with Triton's
// binary tensor extension, and one error. Prints one JSON line with what it got.
// Usage: node kserve_rest.mjs BASE_URL MODEL   (z values: 0.01 * i, labels 0..N-1)
const [base, model] = process.argv.slice(2);

async function json(path, options) {
  const response = await fetch(base + path, options);
  return { status: response.status, body: await response.json() };
}

const ready = await json("/v2/health/ready");
const meta = await json(`/v2/models/${model}`);
const z = meta.body.inputs.find((t) => t.name === "z");
const latent = z.shape[1];
const n = 3;
const data = Array.from({ length: n * latent }, (_, i) => 0.01 * i);
const labels = Array.from({ length: n }, (_, i) => i);

// JSON tensors.
const request = {
  id: "node-1",
  inputs: [{ name: "z", datatype: "FP32", shape: [n, latent], data },
           { name: "label", datatype: "INT64", shape: [n], data: labels }],
  outputs: [{ name: "image" }],
};
const plain = await json(`/v2/models/${model}/infer`, {
  method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(request) });

// Binary tensors: JSON header, then little-endian bytes of each input, in order.
const zBytes = Buffer.from(new Float32Array(data).buffer);
const labelBytes = Buffer.from(new BigInt64Array(labels.map(BigInt)).buffer);
const header = Buffer.from(JSON.stringify({
  inputs: [{ name: "z", datatype: "FP32", shape: [n, latent], parameters: { binary_data_size: zBytes.length } },
           { name: "label", datatype: "INT64", shape: [n], parameters: { binary_data_size: labelBytes.length } }],
  outputs: [{ name: "image", parameters: { binary_data: true } }],
}));
const response = await fetch(`${base}/v2/models/${model}/infer`, {
  method: "POST",
  headers: { "Inference-Header-Content-Length": String(header.length), "Content-Type": "application/octet-stream" },
  body: Buffer.concat([header, zBytes, labelBytes]),
});
const raw = Buffer.from(await response.arrayBuffer());
const length = Number(response.headers.get("Inference-Header-Content-Length"));
const head = JSON.parse(raw.subarray(0, length).toString("utf8"));
const bytes = raw.subarray(length);
const floats = new Float32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.length));

const missing = await json("/v2/models/no-such-model/infer", { method: "POST", body: JSON.stringify(request) });

console.log(JSON.stringify({
  ready: ready.body.ready, platform: meta.body.platform, latent,
  json: { status: plain.status, id: plain.body.id, shape: plain.body.outputs[0].shape, data: plain.body.outputs[0].data },
  binary: { status: response.status, shape: head.outputs[0].shape, size: head.outputs[0].parameters.binary_data_size,
            data: Array.from(floats) },
  missing: { status: missing.status, error: missing.body.error },
}));
