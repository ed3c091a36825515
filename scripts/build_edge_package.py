"""Build the conditional glyph model package that the torch-free edge tests load.

Runs in the full environment (torch, onnx); writes a package directory with model.onnx,
model.ts, model.pt2 and manifest.json. ``make test-edge`` calls it, then runs tests/edge with
``GANPORT_EDGE_PACKAGE`` pointing at the result.

Usage:
    python scripts/build_edge_package.py build/edge-package
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
from pathlib import Path

logger = logging.getLogger("build_edge_package")

ROOT = Path(__file__).resolve().parent.parent


def build(out_dir: Path) -> Path:
    """Build the 62-class glyph package (untrained tiny cGAN, every format) into ``out_dir``.

    Args:
        out_dir: package directory; replaced if it exists.

    Returns:
        The package directory.

    Example:
        >>> build(Path("build/edge-package"))   # doctest: +SKIP
    """
    # The test helpers build small deterministic packages with the same contract export follows.
    sys.path.insert(0, str(ROOT / "tests"))
    import runtime_helpers

    if out_dir.exists():
        shutil.rmtree(out_dir)
    return runtime_helpers.build_package(out_dir, kind="cgan", class_names=runtime_helpers.GLYPH_CLASSES,
                                         name="edge-glyphs")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path, help="package directory to (re)create")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    path = build(args.out_dir)
    logger.info("built edge test package %s", path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
