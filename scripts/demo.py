"""The README's first command (`make demo`): the whole ganport path on built-in data.

1. train a cGAN on the built-in ``glyphs`` set (CPU in a few minutes, GPU when present);
2. export it (ONNX + TorchScript, verified against the eager model);
3. start ``ganport serve`` in the background and wait for health SERVING;
4. as a gRPC client: a 62-class sample grid, two rendered words, a latent interpolation strip;
5. write the PNGs under one folder, print where they are and the throughput seen, stop the server.

Run: ``python scripts/demo.py --out out/demo`` (``make demo`` does it in a fresh venv).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from ganport.errors import GanportError
from ganport.export import export_package
from ganport.runtime.generator import interpolate_latents
from ganport.runtime.images import make_grid, save_png
from ganport.runtime.server.client import GanportClient
from ganport.trainer import TrainConfig, train

logger = logging.getLogger("ganport.demo")

MODEL_NAME = "glyphs-cgan"
#: The demo's training recipe on top of TrainConfig's defaults (README "Quality": what each buys):
#: a discriminator without dropout that learns twice as fast as the generator, a stronger
#: auxiliary class loss, the hinge loss with Adam beta2 0.99, and bfloat16 autocast, which makes a
#: CPU step about 1.35x cheaper (so more steps fit the same minutes).
RECIPE = {"lr_d": 4e-4, "aux_weight": 1.0, "d_dropout": 0.0, "loss": "hinge", "beta2": 0.99, "amp": True}
WORDS = ("HELLO WORLD", "ganport 2026")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="out/demo", help="output folder (default out/demo)")
    # 12000 steps: as many as the old recipe's 8000 float32 steps took minutes; W and M still
    # miss 90% at 3000-4000.
    parser.add_argument("--steps", type=int, default=12000,
                        help="training steps at batch 64 (default 12000: about 4.5 minutes on one CPU core)")
    parser.add_argument("--per-class", type=int, default=400, help="glyph samples per class (default 400)")
    parser.add_argument("--seed", type=int, default=0, help="seed for training and requests")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    return parser.parse_args(argv)


def start_server(models_dir: Path, log_path: Path, timeout: float = 120.0) -> tuple[subprocess.Popen, str]:
    """Start ``ganport serve`` on a free loopback port; return the process and its address."""
    log = open(log_path, "w")
    proc = subprocess.Popen([sys.executable, "-m", "ganport", "serve", str(models_dir),
                             "--host", "127.0.0.1", "--port", "0"],
                            stdout=subprocess.PIPE, stderr=log, text=True)
    deadline = time.monotonic() + timeout
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            raise SystemExit(f"ganport serve exited early with {proc.wait()}; see {log_path}")
        match = re.search(r"serving \d+ model\(s\) on (\S+)", line)
        if match:
            return proc, match.group(1)
    proc.kill()
    raise SystemExit(f"ganport serve did not report ready in {timeout:.0f} s; see {log_path}")


def wait_serving(client: GanportClient, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if client.health() == "SERVING":
                return
        except Exception:  # the port may not accept yet
            pass
        time.sleep(0.2)
    raise SystemExit("server never reported health SERVING")


def upscale(image: np.ndarray, factor: int) -> np.ndarray:
    """Nearest-neighbour enlargement so 28-pixel glyphs are visible in the README."""
    return image.repeat(factor, axis=0).repeat(factor, axis=1)


def request_pictures(client: GanportClient, out: Path, seed: int) -> dict[str, float]:
    """Ask the server for the grid, words and interpolation strip; return throughput figures."""
    info = client.get_model(MODEL_NAME)
    classes = list(info.class_names)
    samples, columns = 4, 31
    # Class-major rows of 31: each pair of rows is one full specimen 0-9 A-Z a-z.
    labels = [label for _ in range(samples) for label in range(len(classes))]
    start = time.perf_counter()
    images = client.generate(MODEL_NAME, len(labels), seed=seed, labels=labels, encoding="uint8")
    grid_seconds = time.perf_counter() - start
    save_png(out / "grid.png", upscale(make_grid(images, nrow=columns), 2))
    print(f"  grid.png: {len(classes)} classes x {samples} samples "
          f"({len(labels) / grid_seconds:,.0f} images/s over gRPC)")

    for i, word in enumerate(WORDS):
        picture = client.render_word(MODEL_NAME, word, seed=seed + i, noise="per-glyph", height=56)
        name = "word_" + re.sub(r"[^a-z0-9]+", "_", word.lower()).strip("_") + ".png"
        save_png(out / name, picture)
        print(f"  {name}: {word!r}")

    z = np.random.default_rng(seed).standard_normal((2, info.latent_dim), dtype=np.float32)
    path = interpolate_latents(z[0], z[1], 10)
    rows = [client.decode(MODEL_NAME, path, labels=[label] * len(path))
            for label in ("A", "g", "7")]
    save_png(out / "interpolation.png", upscale(make_grid(np.concatenate(rows), nrow=len(path)), 2))
    print("  interpolation.png: latent walks for 'A', 'g', '7' (Decode RPC)")

    # Throughput: many concurrent single-image clients let the dynamic batcher merge requests.
    from concurrent.futures import ThreadPoolExecutor

    n_calls = 256
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=32) as pool:
        list(pool.map(lambda k: client.generate(MODEL_NAME, 1, seed=k, labels=[k % len(classes)]),
                      range(n_calls)))
    concurrent_rate = n_calls / (time.perf_counter() - start)
    print(f"  {n_calls} concurrent single-image calls: {concurrent_rate:,.0f} images/s")
    return {"grid_images_per_s": len(labels) / grid_seconds, "concurrent_images_per_s": concurrent_rate}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)

    print(f"[1/4] training a cGAN on glyphs ({args.steps} steps) ...", flush=True)
    started = time.perf_counter()
    result = train(TrainConfig(kind="cgan", dataset="glyphs", steps=args.steps, seed=args.seed, **RECIPE,
                               dataset_options={"per_class": args.per_class}, device=args.device,
                               # A new timestamped run each time: rerunning the demo keeps earlier runs.
                               out_dir=str(out / "runs"),
                               sample_interval=1000, checkpoint_interval=1000))
    print(f"      trained {result.step} steps in {time.perf_counter() - started:.0f} s: {result.run_dir}")

    print("[2/4] exporting (ONNX + TorchScript, verified) ...", flush=True)
    models_dir = out / "models"
    package = export_package(result.checkpoint, models_dir / MODEL_NAME,
                             formats=("onnx", "torchscript"), overwrite=True)
    print(f"      {package}")

    print("[3/4] starting ganport serve ...", flush=True)
    proc, address = start_server(models_dir, out / "server.log")
    try:
        with GanportClient(address) as client:
            wait_serving(client)
            print(f"      serving on {address}, health SERVING")
            print("[4/4] requesting pictures over gRPC ...", flush=True)
            figures = request_pictures(client, out, args.seed)
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=30)
    if code != 0:
        print(f"server exited with {code}; see {out / 'server.log'}", file=sys.stderr)
        return 1
    (out / "throughput.json").write_text(json.dumps(figures, indent=2) + "\n")
    print(f"done: pictures in {out} (grid.png, word_*.png, interpolation.png; "
          f"training samples and loss curve in {result.run_dir}); server stopped cleanly")
    return 0


def _cli() -> int:
    try:
        return main()
    except GanportError as exc:  # a clean one-line error, as the ganport CLI gives
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(_cli())
