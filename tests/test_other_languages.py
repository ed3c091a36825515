"""The other-language examples (docs/OTHER_LANGUAGES.md) give Python's pixels, byte for byte.

Node.js (examples/node, onnxruntime-node) and a web page in headless Chromium (examples/browser,
onnxruntime-web) decode the same latents as ``Generator.decode`` and must return the same uint8
``[N, H, W, C]`` pixels: max abs difference 0. node_modules comes from the examples' own lock
files (``make examples``: ``npm ci --ignore-scripts``), installed here when missing; chromium from
``scripts/ensure_chromium.sh`` when /usr/bin/chromium is missing.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

import numpy as np
import pytest

import runtime_helpers
from ganport.runtime import Generator
from ganport.runtime.images import to_uint8

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
NODE_SCRIPT = EXAMPLES / "node" / "decode.mjs"
BROWSER = EXAMPLES / "browser"

#: (kind, class names, image shape): conditional grayscale and unconditional RGB, not square.
PACKAGES = {
    "cgan": dict(kind="cgan", class_names=runtime_helpers.GLYPH_CLASSES, image_shape=(1, 12, 12)),
    "gan": dict(kind="gan", class_names=(), image_shape=(3, 10, 14)),
}


def _install_node_modules() -> None:
    """``make examples`` (npm ci --ignore-scripts from the lock files) unless already installed."""
    wanted = [EXAMPLES / "node" / "node_modules" / "onnxruntime-node",
              EXAMPLES / "browser" / "node_modules" / "onnxruntime-web"]
    if all(path.is_dir() for path in wanted):
        return
    if shutil.which("make"):
        command = ["make", "-C", str(ROOT), "examples"]
        result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    else:  # the same as the make target, without make
        for folder in ("node", "browser"):
            command = ["npm", "ci", "--ignore-scripts", "--no-audit", "--no-fund", "--loglevel=error"]
            result = subprocess.run(command, cwd=EXAMPLES / folder, capture_output=True, text=True, timeout=600)
            if result.returncode:
                break
    if result.returncode:
        pytest.fail(f"installing the examples' node_modules failed ({' '.join(command)}):\n"
                    f"{result.stdout[-2000:]}\n{result.stderr[-2000:]}")


@pytest.fixture(scope="module")
def node() -> str:
    """The node binary, with the examples' node_modules installed."""
    node_bin, npm_bin = shutil.which("node"), shutil.which("npm")
    if not node_bin or not npm_bin:
        pytest.skip("Node.js/npm are not installed (needed for the other-language examples)")
    _install_node_modules()
    return node_bin


@pytest.fixture(scope="module")
def packages(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("lang-packages")
    return {name: runtime_helpers.build_package(root / name, formats=("onnx",), seed=3, **spec)
            for name, spec in PACKAGES.items()}


def _latents(gen: Generator, n: int = 24, seed: int = 7) -> tuple[np.ndarray, list[int] | None]:
    """Latents as ganport draws them, scaled so some pixels saturate, plus a zero row."""
    z = gen.sample_latents(n, seed) * np.float32(2.5)
    z[0] = 0
    labels = [i % gen.info.n_classes for i in range(n)] if gen.info.n_classes else None
    return z.astype(np.float32), labels


def _write_latents(path: Path, z: np.ndarray, labels: list[int] | None) -> Path:
    """The examples' latents file: shape + base64 of little-endian float32 (exact bits) + labels."""
    path.write_text(json.dumps({"shape": list(z.shape), "dtype": "float32",
                                "z": base64.b64encode(z.astype("<f4").tobytes()).decode("ascii"),
                                "labels": labels}))
    return path


def _pixels(result: dict) -> np.ndarray:
    assert result["dtype"] == "uint8"
    return np.frombuffer(base64.b64decode(result["pixels"]), np.uint8).reshape(result["shape"])


def _assert_same(expected: np.ndarray, got: np.ndarray) -> None:
    assert got.shape == expected.shape
    diff = int(np.abs(expected.astype(np.int16) - got.astype(np.int16)).max())
    print(f"max abs diff {diff} over {expected.size} pixels")
    assert diff == 0


# --- Node.js -------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(PACKAGES))
def test_node_decode_matches_python(node: str, packages: dict[str, Path], tmp_path: Path, name: str) -> None:
    gen = Generator.load(packages[name])
    z, labels = _latents(gen)
    latents = _write_latents(tmp_path / "latents.json", z, labels)
    out = tmp_path / "out.json"
    result = subprocess.run([node, str(NODE_SCRIPT), str(packages[name]), str(latents), str(out)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    _assert_same(gen.decode(z, labels), _pixels(json.loads(out.read_text())))


def test_node_class_names_and_errors(node: str, packages: dict[str, Path], tmp_path: Path) -> None:
    """Labels may be class names; a wrong latent size or label is an error, not a guess."""
    gen = Generator.load(packages["cgan"])
    z, _ = _latents(gen, n=3)
    names = ["H", "i", "7"]
    out = tmp_path / "out.json"
    run = lambda latents: subprocess.run([node, str(NODE_SCRIPT), str(packages["cgan"]), str(latents), str(out)],
                                         capture_output=True, text=True, timeout=60)
    assert run(_write_latents(tmp_path / "names.json", z, names)).returncode == 0
    _assert_same(gen.decode(z, names), _pixels(json.loads(out.read_text())))
    bad = run(_write_latents(tmp_path / "wide.json", np.zeros((3, gen.info.latent_dim + 1), np.float32), names))
    assert bad.returncode == 1 and "latent_dim" in bad.stderr
    bad = run(_write_latents(tmp_path / "label.json", z, [0, 1, 99]))
    assert bad.returncode == 1 and "99" in bad.stderr


def _edge_values(low: float, high: float) -> np.ndarray:
    """Floats where the conversion can go wrong: exact .5 ties, bounds, out of range, NaN, inf."""
    scale = np.float32(255.0 / (high - low))
    candidates = ((np.arange(-3, 259, dtype=np.float64) + 0.5) / float(scale) + low).astype(np.float32)
    scaled = (candidates - np.float32(low)) * scale
    ties = candidates[scaled - np.floor(scaled) == 0.5]
    rng = np.random.default_rng(0)
    values = np.concatenate([ties, rng.uniform(low - 0.5, high + 0.5, 500).astype(np.float32),
                             np.array([low, high, np.nextafter(np.float32(high), np.float32(9)), -0.0, 0.0,
                                       np.nan, np.inf, -np.inf, 1e30, -1e30], np.float32)])
    assert len(ties) > 100, "the edge cases must include many exact ties"
    return values.astype(np.float32)


@pytest.mark.parametrize("value_range", [(-1.0, 1.0), (0.0, 1.0), (-0.5, 3.0)])
def test_node_to_uint8_matches_numpy(node: str, tmp_path: Path, value_range: tuple[float, float]) -> None:
    """The JavaScript conversion equals runtime/images.py to_uint8 on ties (half to even), NaN, inf."""
    values = _edge_values(*value_range)
    images = values.reshape(1, 1, 1, -1)
    (tmp_path / "in.bin").write_bytes(images.astype("<f4").tobytes())
    script = ("import { readFileSync, writeFileSync } from 'node:fs';"
              f"import {{ toUint8 }} from {json.dumps(NODE_SCRIPT.as_uri())};"
              "const [inp, out, n, lo, hi] = process.argv.slice(1);"
              "const b = readFileSync(inp); const f = new Float32Array(b.buffer, b.byteOffset, b.length / 4);"
              "writeFileSync(out, toUint8(f, [1, 1, 1, Number(n)], [Number(lo), Number(hi)]));")
    result = subprocess.run([node, "--input-type=module", "-e", script, str(tmp_path / "in.bin"),
                             str(tmp_path / "out.bin"), str(values.size), *map(repr, value_range)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    got = np.frombuffer((tmp_path / "out.bin").read_bytes(), np.uint8).reshape(1, 1, -1, 1)
    _assert_same(to_uint8(images, value_range), got)


def test_browser_and_node_share_the_conversion() -> None:
    """examples/browser/main.js carries the same toUint8 as the Node example (tested above)."""
    pattern = re.compile(r"^export function toUint8\(.*?^}\n", re.S | re.M)
    node_fn = pattern.search(NODE_SCRIPT.read_text())
    browser_fn = pattern.search((BROWSER / "main.js").read_text())
    assert node_fn and browser_fn and node_fn.group(0) == browser_fn.group(0)


# --- the browser ---------------------------------------------------------------------------------

def _chromium() -> str:
    for candidate in (os.environ.get("CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    result = subprocess.run(["sh", str(ROOT / "scripts" / "ensure_chromium.sh")],
                            capture_output=True, text=True, timeout=900)
    path = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""
    if result.returncode == 0 and path and os.access(path, os.X_OK):
        return path
    pytest.skip((result.stderr.strip().splitlines() or ["chromium could not be installed"])[-1])


@pytest.fixture(scope="module")
def chromium(node: str) -> str:
    return _chromium()


def _load_serve_module():
    spec = importlib.util.spec_from_file_location("ganport_browser_serve", BROWSER / "serve.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _dump_dom(chromium: str, url: str) -> str:
    """The page's DOM after its scripts ran (headless, no network but loopback, throwaway profile)."""
    with tempfile.TemporaryDirectory(prefix="ganport-chromium-") as profile:
        command = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                   "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-extensions",
                   "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--virtual-time-budget=20000",
                   "--dump-dom", url]
        try:
            result = subprocess.run(command, capture_output=True, text=True, timeout=90)
        except subprocess.TimeoutExpired:
            return ""  # a hung browser counts as one failed try
    return result.stdout


def _page_result(chromium: str, url: str) -> dict:
    """Load the page until it reports done (a few tries: a cold start can outlast the time budget)."""
    status = "no output"
    for _ in range(3):
        dom = _dump_dom(chromium, url)
        match = re.search(r'<span id="status">(.*?)</span>', dom, re.S)
        status = match.group(1) if match else "no status in the dumped DOM"
        if status == "done":
            return json.loads(re.search(r'<pre id="result">(.*?)</pre>', dom, re.S).group(1))
        if status.startswith("error"):
            break
    pytest.fail(f"the browser page did not finish: {status}")


@pytest.mark.parametrize("name", sorted(PACKAGES))
def test_browser_decode_matches_python(chromium: str, packages: dict[str, Path], tmp_path: Path,
                                       name: str) -> None:
    gen = Generator.load(packages[name])
    z, labels = _latents(gen)
    _write_latents(tmp_path / "latents.json", z, labels)
    server = _load_serve_module().make_server(packages[name], data=tmp_path)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        port = server.server_address[1]
        result = _page_result(chromium, f"http://127.0.0.1:{port}/?pkg=pkg/&latents=data/latents.json")
    finally:
        server.shutdown()
        server.server_close()
    _assert_same(gen.decode(z, labels), _pixels(result))


def test_browser_page_without_latents_draws_random_ones(chromium: str, packages: dict[str, Path]) -> None:
    """Opened by hand (no latents file), the page still runs the model on random latents."""
    server = _load_serve_module().make_server(packages["cgan"])
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        result = _page_result(chromium, f"http://127.0.0.1:{server.server_address[1]}/")
    finally:
        server.shutdown()
        server.server_close()
    assert result["shape"] == [10, 12, 12, 1]
