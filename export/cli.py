"""``ganport export``: write a verified model package from a checkpoint.

Formats and the options each accepts come from :data:`ganport.export.formats.FORMATS`. Nothing
heavy is imported until the command runs, so ``ganport --help`` works without torch.
"""

from __future__ import annotations

import argparse
import logging

from ganport.export.formats import DEFAULT_FORMATS, FORMATS, OPTION_FLAGS

logger = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``export`` sub-command."""
    formats_help = "; ".join(
        f"{f.name}: {f.description}" + (f" [options: {', '.join(sorted(OPTION_FLAGS[o] for o in f.options))}]" if f.options else "")
        for f in FORMATS)
    parser = subparsers.add_parser(
        "export", help="export a checkpoint's generator to ONNX/TorchScript/pt2/Triton",
        description="Export a checkpoint's generator (and AAE encoder) to a model package "
                    "directory with manifest.json, verifying every artifact against the eager model.")
    parser.add_argument("checkpoint", help="checkpoint .pt written by `ganport train`")
    parser.add_argument("-o", "--output", required=True, metavar="DIR", help="package directory to create")
    # Validated against FORMATS by export itself, so a bad name is one `error:` line (exit 2).
    parser.add_argument("--format", nargs="+", dest="formats", metavar="FORMAT", default=None,
                        help=f"formats to write (default: {' '.join(DEFAULT_FORMATS)}). {formats_help}")
    parser.add_argument("--name", help="model name in the metadata and Triton repository (default: DIR's name)")
    parser.add_argument("--opset", type=int, metavar="N", help="ONNX opset (default: the exporter's)")
    parser.add_argument("--fp16", action="store_true", help="also write model.fp16.onnx (half precision inside)")
    parser.add_argument("--verify", action=argparse.BooleanOptionalAction, default=True,
                        help="load each artifact back and compare with eager at batch 1, 7, 64 (default: on)")
    parser.add_argument("--triton-device", metavar="{cpu,gpu}", help="Triton instance_group kind (default cpu)")
    parser.add_argument("--max-batch", type=int, metavar="N", help="Triton max_batch_size (default 64)")
    parser.add_argument("--force", action="store_true", help="replace DIR if it exists")
    parser.set_defaults(handler=handle_export)


def handle_export(args: argparse.Namespace) -> int:
    """Run the export and print, per artifact, the max abs difference at each batch size."""
    from ganport.export.package import run_export

    report = run_export(args.checkpoint, args.output, args.formats, name=args.name, opset=args.opset,
                        fp16=args.fp16, verify=args.verify, triton_device=args.triton_device,
                        max_batch=args.max_batch, overwrite=args.force)
    info = report.info
    if info.exporter:
        print(f"ONNX exporter: {info.exporter}, opset {info.opset}")
    for artifact in report.artifacts:
        if artifact.load is None:
            print(f"  {artifact.relpath}")
        elif artifact.diffs:
            diffs = "  ".join(f"batch {b}: {d:.2e}" for b, d in artifact.diffs.items())
            print(f"  {artifact.relpath}  max abs diff  {diffs}")
        else:
            print(f"  {artifact.relpath}  (not verified)")
    print(f"exported {info.kind} model {info.name!r} to {report.path}")
    return 0
