#!/usr/bin/env node
// Decode caller-supplied latents with a ganport model package, from Node.js.
//
//   node decode.mjs PKG latents.json out.json
//
// PKG          a ganport model package directory (manifest.json + model.onnx).
// latents.json {"shape": [N, latent_dim], "dtype": "float32",
//               "z": "<base64 of N*latent_dim little-endian float32>",
//               "labels": [class indices or class names] | null}
//              (also accepted: "z" as a nested array of numbers [[...], ...]).
// out.json     {"shape": [N, H, W, C], "dtype": "uint8", "pixels": "<base64 of the NHWC bytes>"}
//
// The pixels are byte-for-byte those of Python's Generator.decode(z, labels) for the same z:
// see docs/OTHER_LANGUAGES.md. Nothing here is hard-coded: every size comes from manifest.json.
import { readFile, writeFile } from "node:fs/promises";
import path from "node:path";
import ort from "onnxruntime-node";

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

/** Class indices from indices or class names, checked against the manifest. */
export function resolveLabels(manifest, labels, n) {
  const nClasses = manifest.n_classes || 0;
  if (nClasses === 0) {
    if (labels != null) throw new Error(`model ${manifest.name} is unconditional: labels must be null`);
    return null;
  }
  if (!Array.isArray(labels) || labels.length !== n) {
    throw new Error(`conditional model ${manifest.name} needs ${n} labels, got ${JSON.stringify(labels)}`);
  }
  return labels.map((label) => {
    const index = typeof label === "string" ? manifest.class_names.indexOf(label) : label;
    if (!Number.isInteger(index) || index < 0 || index >= nClasses) {
      throw new Error(`label ${JSON.stringify(label)} is not one of the ${nClasses} classes`);
    }
    return index;
  });
}

/** z as a Float32Array from {"shape", "z"} (base64 little-endian float32 or nested numbers). */
export function readLatents(latents, latentDim) {
  const [n, d] = latents.shape;
  if (d !== latentDim) throw new Error(`latents have ${d} columns, the model wants latent_dim ${latentDim}`);
  let z;
  if (typeof latents.z === "string") {
    const bytes = Buffer.from(latents.z, "base64");
    if (bytes.length !== n * d * 4) throw new Error(`z has ${bytes.length} bytes, expected ${n * d * 4}`);
    z = new Float32Array(n * d);
    for (let i = 0; i < n * d; i++) z[i] = bytes.readFloatLE(i * 4);
  } else {
    z = Float32Array.from(latents.z.flat());
    if (z.length !== n * d) throw new Error(`z has ${z.length} numbers, expected ${n * d}`);
  }
  if (!z.every(Number.isFinite)) throw new Error("z contains NaN or inf");
  return z;
}

export async function decode(pkgDir, latents) {
  const manifest = JSON.parse(await readFile(path.join(pkgDir, "manifest.json"), "utf8"));
  const modelFile = (manifest.files || {}).onnx;
  if (!modelFile) throw new Error(`${pkgDir}/manifest.json lists no ONNX model (files.onnx)`);
  const [n] = latents.shape;
  const z = readLatents(latents, manifest.latent_dim);
  const labels = resolveLabels(manifest, latents.labels ?? null, n);

  const session = await ort.InferenceSession.create(path.join(pkgDir, modelFile));
  const feeds = { z: new ort.Tensor("float32", z, [n, manifest.latent_dim]) };
  if (labels) feeds.label = new ort.Tensor("int64", BigInt64Array.from(labels, BigInt), [n]);
  const { image } = await session.run(feeds, ["image"]);
  const [, c, h, w] = image.dims;
  const expected = manifest.image_shape;
  if (c !== expected[0] || h !== expected[1] || w !== expected[2]) {
    throw new Error(`model output ${image.dims} does not match manifest image_shape ${expected}`);
  }
  const pixels = toUint8(image.data, image.dims, manifest.value_range || [-1, 1]);
  await session.release();
  return { shape: [n, h, w, c], dtype: "uint8", pixels };
}

async function main(argv) {
  if (argv.length !== 3) {
    console.error("usage: node decode.mjs PKG latents.json out.json");
    process.exit(2);
  }
  const [pkgDir, latentsPath, outPath] = argv;
  const latents = JSON.parse(await readFile(latentsPath, "utf8"));
  const result = await decode(pkgDir, latents);
  await writeFile(outPath, JSON.stringify({ ...result, pixels: Buffer.from(result.pixels).toString("base64") }));
  console.log(`wrote ${result.shape.join("x")} uint8 pixels to ${outPath}`);
}

if (import.meta.url === `file://${process.argv[1]}` || process.argv[1]?.endsWith("decode.mjs")) {
  main(process.argv.slice(2)).catch((err) => {
    console.error(`error: ${err.message}`);
    process.exit(1);
  });
}
