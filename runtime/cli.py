"""``ganport generate``, ``ganport render`` and ``ganport interpolate``: the runtime from the shell,
no server needed.

Examples::

    ganport generate packages/glyphs -n 16 --seed 1 --label A -o grid.png
    ganport render packages/glyphs "Hello 2026" --seed 1 -o word.png
    ganport interpolate packages/glyphs --steps 10 --seed 1 --label A -o strip.png

Handlers import the runtime lazily so ``ganport --help`` stays fast; none of them needs torch
with the default ONNX backend.

Limits (checked before the model is loaded; beyond them the command prints one ``error:`` line
and exits 2, instead of running out of memory): at most :data:`MAX_IMAGES` images per command
(``generate -n``; ``interpolate`` rows x ``--steps``), :data:`MAX_TEXT_LENGTH` characters of text
for ``render``, and :data:`MAX_PADDING` pixels of grid padding. Use the Python API or the server
for more.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

#: Most images one ``generate`` / ``interpolate`` command makes (a 4096-image grid of 64x64 RGB
#: images is ~50 MB of pixels).
MAX_IMAGES = 4096
#: Most characters ``render`` writes.
MAX_TEXT_LENGTH = 1000
#: Most pixels of padding between grid cells.
MAX_PADDING = 64


def _add_model_options(parser: argparse.ArgumentParser) -> None:
    """Options shared by every runtime command: the package and where to run it."""
    from ganport.runtime.backends import BACKENDS  # the one table of backends (numpy-only import)
    from ganport.runtime.builtins import BUILTINS, DEFAULT_BUILTIN

    parser.add_argument("package", nargs="?", default=None,
                        help="model package directory, a single .onnx/.ts/.pt2 file, or builtin:NAME "
                             f"(default: the built-in {DEFAULT_BUILTIN!r} model)")
    parser.add_argument("--builtin", choices=tuple(BUILTINS), default=None,
                        help="use a model shipped with ganport instead of a package: "
                             + "; ".join(f"{m.name}: {m.description}" for m in BUILTINS.values()))
    parser.add_argument("-o", "--output", required=True, help="PNG file to write")

    parser.add_argument("--backend", choices=tuple(BACKENDS), default=None,
                        help="inference backend (default: onnx for a package, the file's format for a file)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for inference")
    parser.add_argument("--seed", type=int, default=None, help="random seed (same seed, same images)")


def register(subparsers: Any) -> None:
    """Add the runtime sub-commands to the ``ganport`` parser."""
    generate = subparsers.add_parser("generate", help="generate a grid of images from a model package",
                                     description="Generate N images and save them as one grid PNG.")
    _add_model_options(generate)
    generate.add_argument("-n", "--count", type=int, default=None,
                          help=f"number of images, 1..{MAX_IMAGES} (default 16, or the number of --label values)")
    generate.add_argument("--label", action="append", default=None,
                          help="class index or name; repeat for one label per image (conditional models)")
    generate.add_argument("--nrow", type=int, default=None, help="images per grid row (default: square grid)")
    generate.add_argument("--padding", type=int, default=2, help=f"pixels between grid cells, 0..{MAX_PADDING}")
    generate.set_defaults(handler=_generate)

    render = subparsers.add_parser("render", help="write text with a character-conditioned model",
                                   description="Render text (\\n for new lines) with a glyph model.")
    _add_model_options(render)
    render.add_argument("text", help=f"text to write (at most {MAX_TEXT_LENGTH} characters); \\n starts a new line")
    render.add_argument("--noise", choices=("per-glyph", "shared"), default="per-glyph",
                        help="a new latent per glyph, or one shared by all (default: per-glyph)")
    render.add_argument("--spacing", type=int, default=None, help="pixels between glyphs (may be negative)")
    render.add_argument("--height", type=int, default=None, help="glyph height in pixels")
    render.add_argument("--invert", action="store_true", help="swap dark and light")
    render.add_argument("--no-trim", dest="trim", action="store_false",
                        help="keep each glyph's full width instead of cutting empty columns")
    render.set_defaults(handler=_render)

    interpolate = subparsers.add_parser("interpolate", help="latent walk between two random points",
                                        description="Save a strip of images walking from one random "
                                                    "latent to another (one row per label).")
    _add_model_options(interpolate)
    interpolate.add_argument("--steps", type=int, default=10,
                             help=f"frames per row (default 10; rows x steps at most {MAX_IMAGES})")
    interpolate.add_argument("--label", action="append", default=None,
                             help="class index or name, one row each (default: every class of a "
                                  "conditional model)")
    interpolate.add_argument("--mode", choices=("linear", "slerp"), default="linear", help="path shape")
    interpolate.set_defaults(handler=_interpolate)


def _check_range(value: int | None, name: str, low: int, high: int, hint: str | None = None) -> None:
    """A count option out of range -> InvalidInputError (one ``error:`` line, exit 2)."""
    from ganport.errors import InvalidInputError

    if value is not None and not low <= value <= high:
        raise InvalidInputError(f"{name} must be >= {low}, got {value}" if value < low else
                                f"{name} is {value}, over this command's limit of {high}",
                                hint=hint if value > high else None)


_MORE = "generate more in several commands, or use the Python API (ganport.runtime.Generator) or `ganport serve`"


def model_path(package: str | None, builtin: str | None) -> str:
    """The model a runtime command uses: the package given, ``--builtin NAME``, or the default
    built-in model when neither is given (so ``ganport render "Hello" -o hello.png`` works right
    after install)."""
    from ganport.errors import InvalidInputError
    from ganport.runtime.builtins import BUILTIN_PREFIX, DEFAULT_BUILTIN

    if package is not None and builtin is not None:
        raise InvalidInputError(f"give a package or --builtin, not both (got {package!r} and --builtin {builtin})")
    if package is not None:
        return package
    return BUILTIN_PREFIX + (builtin or DEFAULT_BUILTIN)


def _load(args: argparse.Namespace) -> Any:
    from ganport.runtime.generator import Generator

    return Generator.load(model_path(args.package, args.builtin), backend=args.backend, device=args.device,
                          threads=args.threads)


def _unescape(text: str) -> str:
    """Let ``\\n`` typed on a shell command line mean a new line."""
    return text.replace("\\n", "\n")


def _generate(args: argparse.Namespace) -> int:
    from ganport.runtime.images import make_grid, save_png

    labels = args.label
    count = args.count if args.count is not None else (len(labels) if labels and len(labels) > 1 else 16)
    _check_range(count, "-n" if args.count is not None else "the number of --label values", 1, MAX_IMAGES, _MORE)
    _check_range(args.nrow, "--nrow", 1, MAX_IMAGES)
    _check_range(args.padding, "--padding", 0, MAX_PADDING)
    gen = _load(args)
    if labels is not None and len(labels) == 1:
        labels = labels[0]
    images = gen.generate(count, labels=labels, seed=args.seed)
    path = save_png(args.output, make_grid(images, nrow=args.nrow, padding=args.padding))
    print(f"wrote {path}: {count} images of {gen.info.width}x{gen.info.height} "
          f"({gen.backend_name} on {gen.device})")
    return 0


def _render(args: argparse.Namespace) -> int:
    from ganport.runtime.images import save_png

    _check_range(len(args.text), "the text length", 0, MAX_TEXT_LENGTH, "render it in several parts")
    if args.package is None and (Path(args.text) / "manifest.json").is_file():
        # `ganport render models/glyphs -o x.png`: the package was taken for the text.
        from ganport.errors import InvalidInputError

        raise InvalidInputError(f"{args.text!r} is a model package and no text was given",
                                hint=f'ganport render {args.text} "TEXT" -o word.png')
    gen = _load(args)
    image = gen.render_word(_unescape(args.text), seed=args.seed, noise=args.noise, spacing=args.spacing,
                            height=args.height, invert=args.invert, trim=args.trim)
    path = save_png(args.output, image)
    print(f"wrote {path}: {image.shape[1]}x{image.shape[0]} ({gen.backend_name} on {gen.device})")
    return 0


def _interpolate(args: argparse.Namespace) -> int:
    import numpy as np

    from ganport.runtime.images import make_grid, save_png

    _check_range(args.steps, "--steps", 1, MAX_IMAGES, _MORE)
    gen = _load(args)
    z0, z1 = gen.sample_latents(2, seed=args.seed)
    if gen.info.conditional:
        rows = args.label or list(range(gen.info.n_classes))
        _check_range(len(rows) * args.steps, "rows x --steps", 1, MAX_IMAGES,
                     "pass fewer --label rows or fewer --steps")
    elif args.label:
        rows = args.label  # resolve_labels names the problem: unconditional models take no labels
    else:
        rows = [None]
    frames = np.concatenate([gen.interpolate(z0, z1, args.steps, labels=label, mode=args.mode)
                             for label in rows])
    path = save_png(args.output, make_grid(frames, nrow=frames.shape[0] // len(rows)))
    print(f"wrote {path}: {len(rows)} row(s) of {frames.shape[0] // len(rows)} frames "
          f"({gen.backend_name} on {gen.device})")
    return 0
