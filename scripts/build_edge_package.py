"""Build the conditional glyph model package that the torch-free edge tests load.

Runs in the full environment (torch, onnx): trains a cGAN on the built-in ``glyphs`` set (62
classes, 0-9 A-Z a-z) for a few steps with the real trainer and exports it with the real exporter
(model.onnx, model.ts, model.pt2, manifest.json). The edge tests need a real package, not good
pictures, so a few steps are enough. ``--synthetic`` builds the package from the tiny hand-made
networks in tests/runtime_helpers.py instead (no training; same package contract).

``make test-edge`` calls it, then runs tests/edge with ``GANPORT_EDGE_PACKAGE`` pointing at the
result.

Usage:
    python scripts/build_edge_package.py build/edge-package [--synthetic]
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
import tempfile
from pathlib import Path

logger = logging.getLogger("build_edge_package")

ROOT = Path(__file__).resolve().parent.parent
NAME = "edge-glyphs"
FORMATS = ("onnx", "torchscript", "pt2")


def build_trained(out_dir: Path) -> Path:
    """Train a glyph cGAN for a few steps and export it to ``out_dir``.

    Example:
        >>> build_trained(Path("build/edge-package"))   # doctest: +SKIP
    """
    from ganport.export import export_package
    from ganport.trainer import TrainConfig, train

    with tempfile.TemporaryDirectory(prefix="ganport-edge-") as runs:
        config = TrainConfig(kind="cgan", dataset="glyphs", image_size=28, n_samples=124, latent_dim=16,
                             batch_size=16, steps=3, sample_interval=3, checkpoint_interval=3, seed=0,
                             device="cpu", out_dir=runs, run_name="edge")
        result = train(config)
        return export_package(result.checkpoint, out_dir, formats=FORMATS, name=NAME, overwrite=True)


def build_synthetic(out_dir: Path) -> Path:
    """Build the package from tests/runtime_helpers.py's tiny untrained network.

    Example:
        >>> build_synthetic(Path("build/edge-package"))   # doctest: +SKIP
    """
    sys.path.insert(0, str(ROOT / "tests"))
    import runtime_helpers

    if out_dir.exists():
        shutil.rmtree(out_dir)
    return runtime_helpers.build_package(out_dir, kind="cgan", class_names=runtime_helpers.GLYPH_CLASSES,
                                         name=NAME, formats=FORMATS)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path, help="package directory to (re)create")
    parser.add_argument("--synthetic", action="store_true",
                        help="use the tiny hand-made test network instead of the trainer and exporter")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    path = (build_synthetic if args.synthetic else build_trained)(args.out_dir)
    logger.info("built edge test package %s", path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
