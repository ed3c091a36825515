// ganport model package -> uint8 pixels in the browser, with onnxruntime-web (WASM, one thread).
// Byte-for-byte the pixels of Python's Generator.decode(z, labels) for the same z: see
// docs/OTHER_LANGUAGES.md. All sizes come from manifest.json.
import * as ort from "./node_modules/onnxruntime-web/dist/ort.wasm.min.mjs";

// The .wasm files are served from this origin (no CDN). One thread: no SharedArrayBuffer, so no
// cross-origin isolation headers are needed.
ort.env.wasm.wasmPaths = new URL("./node_modules/onnxruntime-web/dist/", import.meta.url).href;
ort.env.wasm.numThreads = 1;
ort.env.wasm.proxy = false;

const statusEl = document.getElementById("status");
const resultEl = document.getElementById("result");

/** ganport's pixel conversion (runtime/images.py to_uint8): float32 [N,C,H,W] -> uint8 [N,H,W,C]. */
export function toUint8(data, [n, c, h, w], [low, high]) {
  const low32 = Math.fround(low);
  const scale32 = Math.fround(255 / (high - low));
  const out = new Uint8Array(n * h * w * c);
  for (let i = 0; i < n; i++) {
    for (let ch = 0; ch < c; ch++) {
      for (let y = 0; y < h; y++) {
        for (let x = 0; x < w; x++) {
          // float32 arithmetic, as numpy does it: (x - low) then * scale, each rounded to float32.
          const v = Math.fround(Math.fround(data[((i * c + ch) * h + y) * w + x] - low32) * scale32);
          let r = Math.round(v);                       // half up ...
          if (r - v === 0.5 && r % 2 !== 0) r -= 1;    // ... made half to even (np.rint)
          if (!(r > 0)) r = 0;                         // NaN and negatives -> 0
          if (r > 255) r = 255;
          out[((i * h + y) * w + x) * c + ch] = r;
        }
      }
    }
  }
  return out;
}

function base64ToBytes(text) {
  const binary = atob(text);
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
  return bytes;
}

function bytesToBase64(bytes) {
  let binary = "";
  for (let i = 0; i < bytes.length; i += 0x8000) {
    binary += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  }
  return btoa(binary);
}

/** z (Float32Array) and labels from {"shape", "z": base64 little-endian float32 | nested numbers, "labels"}. */
function readLatents(latents, manifest) {
  const [n, d] = latents.shape;
  if (d !== manifest.latent_dim) throw new Error(`latents have ${d} columns, latent_dim is ${manifest.latent_dim}`);
  let z;
  if (typeof latents.z === "string") {
    const view = new DataView(base64ToBytes(latents.z).buffer);
    if (view.byteLength !== n * d * 4) throw new Error(`z has ${view.byteLength} bytes, expected ${n * d * 4}`);
    z = new Float32Array(n * d);
    for (let i = 0; i < n * d; i++) z[i] = view.getFloat32(i * 4, true);
  } else {
    z = Float32Array.from(latents.z.flat());
  }
  if (z.length !== n * d || !z.every(Number.isFinite)) throw new Error("z must be n*latent_dim finite numbers");
  return { n, z, labels: resolveLabels(manifest, latents.labels ?? null, n) };
}

function resolveLabels(manifest, labels, n) {
  const nClasses = manifest.n_classes || 0;
  if (nClasses === 0) {
    if (labels != null) throw new Error("the model is unconditional: labels must be null");
    return null;
  }
  if (!Array.isArray(labels) || labels.length !== n) throw new Error(`the model needs ${n} labels`);
  return labels.map((label) => {
    const index = typeof label === "string" ? manifest.class_names.indexOf(label) : label;
    if (!Number.isInteger(index) || index < 0 || index >= nClasses) throw new Error(`bad label ${label}`);
    return index;
  });
}

/** Random latents when none are given (Box-Muller on Math.random: NOT ganport's seeded numpy stream). */
function randomLatents(manifest) {
  const n = manifest.n_classes ? Math.min(manifest.n_classes, 10) : 8;
  const z = new Float32Array(n * manifest.latent_dim);
  for (let i = 0; i < z.length; i++) {
    z[i] = Math.sqrt(-2 * Math.log(1 - Math.random())) * Math.cos(2 * Math.PI * Math.random());
  }
  const labels = manifest.n_classes ? Array.from({ length: n }, (_, i) => i) : null;
  return { n, z, labels };
}

/** Draw the N images side by side (grayscale, RGB or RGBA). */
function draw(pixels, [n, h, w, c]) {
  const canvas = document.getElementById("canvas");
  canvas.width = n * w;
  canvas.height = h;
  canvas.style.width = `${n * w * Math.max(1, Math.floor(96 / h))}px`;  // scaled up, pixelated
  const ctx = canvas.getContext("2d");
  const rgba = ctx.createImageData(n * w, h);
  for (let i = 0; i < n; i++) {
    for (let y = 0; y < h; y++) {
      for (let x = 0; x < w; x++) {
        const src = ((i * h + y) * w + x) * c;
        const dst = (y * n * w + i * w + x) * 4;
        const g = pixels[src];
        rgba.data[dst] = g;
        rgba.data[dst + 1] = c >= 3 ? pixels[src + 1] : g;
        rgba.data[dst + 2] = c >= 3 ? pixels[src + 2] : g;
        rgba.data[dst + 3] = c === 4 ? pixels[src + 3] : c === 2 ? pixels[src + 1] : 255;
      }
    }
  }
  ctx.putImageData(rgba, 0, 0);
}

async function main() {
  const params = new URLSearchParams(location.search);
  const pkg = new URL(params.get("pkg") || "pkg/", location.href);
  if (!pkg.pathname.endsWith("/")) pkg.pathname += "/";
  const manifest = await (await fetch(new URL("manifest.json", pkg))).json();
  const modelFile = (manifest.files || {}).onnx;
  if (!modelFile) throw new Error("manifest.json lists no ONNX model (files.onnx)");

  const latentsUrl = params.get("latents");
  const { n, z, labels } = latentsUrl
    ? readLatents(await (await fetch(new URL(latentsUrl, location.href))).json(), manifest)
    : randomLatents(manifest);

  statusEl.textContent = "running";
  const model = new Uint8Array(await (await fetch(new URL(modelFile, pkg))).arrayBuffer());
  const session = await ort.InferenceSession.create(model, { executionProviders: ["wasm"] });
  const feeds = { z: new ort.Tensor("float32", z, [n, manifest.latent_dim]) };
  if (labels) feeds.label = new ort.Tensor("int64", BigInt64Array.from(labels, BigInt), [n]);
  const { image } = await session.run(feeds, ["image"]);
  const [, c, h, w] = image.dims;
  const [ec, eh, ew] = manifest.image_shape;
  if (c !== ec || h !== eh || w !== ew) throw new Error(`output ${image.dims} != image_shape ${manifest.image_shape}`);
  const pixels = toUint8(image.data, image.dims, manifest.value_range || [-1, 1]);
  const shape = [n, h, w, c];
  draw(pixels, shape);
  resultEl.textContent = JSON.stringify({ shape, dtype: "uint8", pixels: bytesToBase64(pixels) });
  statusEl.textContent = "done";
}

main().catch((err) => {
  statusEl.textContent = `error: ${err && err.message ? err.message : err}`;
  console.error(err);
});
