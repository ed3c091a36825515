#!/usr/bin/env python3
"""Prepare, on a machine that reaches PyPI, the wheels `scripts/gpu_check.py --install` installs on
a GPU machine that reaches no registry.

Usage::

    python scripts/gpu_wheels.py             # .gpu/wheels: scripts/gpu-requirements.txt (+ a ganport wheel)
    python scripts/gpu_wheels.py --ort-gpu   # also .gpu-ort/: onnxruntime-gpu split into carryable parts

The GPU machine's image has Python 3.12 on x86-64, so wheels are downloaded for cp312 manylinux
x86-64 with ``--no-deps`` (every needed package is pinned in the requirements file; the image has
the rest). ``.gpu/`` and ``.gpu-ort/`` are git-ignored; the device tool carries them.

onnxruntime-gpu (243 MiB) is bigger than one device call may carry (64 MiB with the working tree),
so ``--ort-gpu`` splits it into parts of ``--part-mib`` (default 56) with a ``manifest.json``
(wheel name, sha256, parts in order). Each part is carried by one call while the machine stays
warm: carried paths replace only themselves there, so parts carried earlier stay. ``--install``
joins them, checks the sha256 and installs the wheel (benchmarks/README.md, "GPU check", gives
the calls one by one).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REQUIREMENTS = ROOT / "scripts" / "gpu-requirements.txt"
WHEELS = ROOT / ".gpu" / "wheels"
ORT_DIR = ROOT / ".gpu-ort"
PYTHON_VERSION = "3.12"
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64",
             "manylinux1_x86_64", "manylinux_2_5_x86_64")


def pins() -> tuple[list[str], str]:
    """The ``name==version`` lines of the requirements file, and the onnxruntime-gpu pin."""
    packages, ort = [], ""
    for raw in REQUIREMENTS.read_text().splitlines():
        line = raw.strip()
        if line.startswith("# ORT_GPU "):
            ort = line.split(None, 2)[2].strip()
        elif line and not line.startswith("#"):
            packages.append(line)
    return packages, ort


def download(requirements: list[str], dest: Path) -> None:
    command = [sys.executable, "-m", "pip", "download", "-q", "--disable-pip-version-check", "--no-deps",
               "--only-binary=:all:", "--python-version", PYTHON_VERSION, "--implementation", "cp",
               *[arg for platform in PLATFORMS for arg in ("--platform", platform)], "-d", str(dest), *requirements]
    print("$", " ".join(command[2:]), flush=True)
    subprocess.run(command, check=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ort-gpu", action="store_true", help="also download onnxruntime-gpu and split it")
    parser.add_argument("--part-mib", type=int, default=56, help="largest onnxruntime-gpu part, MiB (default 56)")
    args = parser.parse_args(argv)
    packages, ort = pins()
    shutil.rmtree(WHEELS, ignore_errors=True)
    WHEELS.mkdir(parents=True)
    download(packages, WHEELS)
    # A ganport wheel too: --install builds ganport from the checkout, and falls back to this one.
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--disable-pip-version-check", "--no-deps",
                    "--no-build-isolation", "-w", str(WHEELS), str(ROOT)], check=True)
    # The commit, for the report where the GPU machine has no git.
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True)
    (WHEELS.parent / "commit.txt").write_text(commit.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "") + "\n")
    total = sum(p.stat().st_size for p in WHEELS.iterdir())
    print(f"{WHEELS.relative_to(ROOT)}: {len(list(WHEELS.iterdir()))} wheels, {total / 2**20:.1f} MiB")
    if args.ort_gpu:
        shutil.rmtree(ORT_DIR, ignore_errors=True)
        ORT_DIR.mkdir()
        with tempfile.TemporaryDirectory() as tmp:
            download([ort], Path(tmp))
            wheel = next(Path(tmp).glob("*.whl"))
            data = wheel.read_bytes()
        size = args.part_mib * 2**20
        parts = []
        for index, start in enumerate(range(0, len(data), size), start=1):
            name = f"part-{index}.bin"
            (ORT_DIR / name).write_bytes(data[start:start + size])
            parts.append(name)
        manifest = {"wheel": wheel.name, "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data),
                    "parts": parts}
        (ORT_DIR / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        print(f"{ORT_DIR.relative_to(ROOT)}: {wheel.name} ({len(data) / 2**20:.0f} MiB) in {len(parts)} parts; "
              f"carry .gpu-ort/manifest.json with the first")
    return 0


if __name__ == "__main__":
    sys.exit(main())
