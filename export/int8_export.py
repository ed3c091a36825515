"""The ``onnx-int8`` format: ``model.int8.onnx``, the generator quantized to 8-bit integers.

Built with onnxruntime's quantization tools from the same float32 graph as ``model.onnx``
(:func:`ganport.export.onnx_export.build_onnx`, so no second torch export):

1. ``quant_pre_process``: shape inference and graph optimisation, as onnxruntime recommends
   before quantizing.
2. The method per graph, by what the graph computes (:func:`choose_method`):

   * **static QDQ** (``QuantFormat.QDQ``, int8 activations and weights, weights per output
     channel) for graphs with convolutions: activation ranges come from a calibration pass
     (MinMax) over latents drawn exactly as the runtime draws them
     (``numpy.random.default_rng(seed).standard_normal``, float32) with labels spread evenly over
     the classes, so every class's activations are in the ranges.
   * **dynamic** (weights int8 per channel, activation scales computed per call) for graphs made of
     fully connected layers only (the MLP kinds, Gemm/MatMul): it measured as fast as static QDQ
     there and closer to float32 (see benchmarks/README.md), and needs no calibration.

3. The result is checked by ``onnx.checker`` and verified against the eager float32 network like
   every artifact, with the int8 tolerance (``verify.TOLERANCE_INT8``); ``ganport eval --backend
   onnx-int8`` judges what the rounding does to the pictures.

Only the generator is quantized: an AAE's encoder stays float32 (``encoder.onnx``, from the
``onnx`` format), which the ``onnx-int8`` backend uses for ``encode``.

onnxruntime's quantizer logs and prints progress on the root logger and stdout; all of it is
captured (:func:`ganport.export.quiet.handled_warnings`) and logged at DEBUG.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import onnx

from ganport.errors import ExportError
from ganport.export.job import Artifact, ExportJob
from ganport.export.onnx_export import build_onnx, load_onnx, save_onnx
from ganport.export.quiet import handled_warnings

logger = logging.getLogger(__name__)

#: Format name (row of ``formats.FORMATS``), ``ModelInfo.files`` key variant and file infix.
VARIANT = "int8"
#: Calibration: images per class-balanced pass and rows per onnxruntime call; seed of the latents.
CALIBRATION_SAMPLES = 1024
CALIBRATION_BATCH = 64
CALIBRATION_SEED = 0
#: Operators whose presence makes a graph "convolutional" (static QDQ).
CONV_OPS = frozenset({"Conv", "ConvTranspose"})
#: Loggers of onnxruntime's quantizer (it also logs on the root logger, quieted with it).
_QUANT_LOGGERS = ("", "onnxruntime", "onnxruntime.quantization")


def choose_method(model: onnx.ModelProto) -> str:
    """``"static"`` (QDQ, calibrated) for graphs with convolutions, ``"dynamic"`` otherwise.

    Example:
        >>> choose_method(onnx.helper.make_model(onnx.helper.make_graph([], "g", [], [])))
        'dynamic'
    """
    ops = {node.op_type for node in model.graph.node}
    return "static" if ops & CONV_OPS else "dynamic"


def calibration_feeds(job: ExportJob, samples: int = CALIBRATION_SAMPLES, batch: int = CALIBRATION_BATCH,
                      seed: int = CALIBRATION_SEED) -> list[dict[str, np.ndarray]]:
    """The generator inputs the activation ranges are measured on.

    Args:
        job: the export job (latent_dim, classes).
        samples: rows in all.
        batch: rows per call.
        seed: latent seed.

    Returns:
        Feeds ``{"z": float32 [b, latent_dim], "label": int64 [b]}`` (no label for unconditional
        kinds): latents as ``Generator.sample_latents(samples, seed)`` draws them, labels cycling
        ``0, 1, ..., n_classes - 1`` so every class is seen equally often.
    """
    info = job.info
    z = np.random.default_rng(seed).standard_normal((samples, info.latent_dim), dtype=np.float32)
    labels = (np.arange(samples) % info.n_classes).astype(np.int64) if info.conditional else None
    feeds = []
    for start in range(0, samples, batch):
        feed = {"z": z[start:start + batch]}
        if labels is not None:
            feed["label"] = labels[start:start + batch]
        feeds.append(feed)
    return feeds


def _reader(feeds: list[dict[str, np.ndarray]]) -> Any:
    from onnxruntime.quantization import CalibrationDataReader

    class _Feeds(CalibrationDataReader):
        """Hands onnxruntime's calibrator one prepared batch per call."""

        def __init__(self) -> None:
            self._iter: Iterator[dict[str, np.ndarray]] = iter(feeds)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._iter, None)

    return _Feeds()


def quantize(job: ExportJob, model: onnx.ModelProto, method: str | None = None) -> tuple[onnx.ModelProto, dict]:
    """Quantize the float32 generator graph.

    Args:
        job: the export job (for the calibration inputs and a scratch folder in its staging dir).
        model: the float32 ONNX generator.
        method: ``static`` or ``dynamic``; default :func:`choose_method`.

    Returns:
        ``(int8 model, description)``; the description goes into ``ModelInfo.quantization``.

    Raises:
        ExportError: onnxruntime's quantization tools are missing or fail on the graph.
    """
    try:
        from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static
        from onnxruntime.quantization.shape_inference import quant_pre_process
    except ImportError as exc:
        raise ExportError("format onnx-int8 needs onnxruntime's quantization tools, which failed to import",
                          hint="pip install 'ganport[cpu,export]'") from exc
    method = method or choose_method(model)
    description: dict[str, Any] = {"method": method, "weights": "int8, per channel",
                                   "tool": "onnxruntime.quantization"}
    with tempfile.TemporaryDirectory(prefix=".int8-", dir=job.staging) as scratch:
        source, prepared, target = (Path(scratch) / n for n in ("fp32.onnx", "pre.onnx", "int8.onnx"))
        onnx.save_model(model, str(source))
        try:
            with handled_warnings("int8 quantization"):
                quant_pre_process(str(source), str(prepared), skip_symbolic_shape=False)
                if method == "static":
                    feeds = calibration_feeds(job)
                    quantize_static(str(prepared), str(target), _reader(feeds), quant_format=QuantFormat.QDQ,
                                    per_channel=True, activation_type=QuantType.QInt8,
                                    weight_type=QuantType.QInt8)
                    description.update(
                        format="QDQ", activations="int8, per tensor, MinMax calibration",
                        calibration={"samples": CALIBRATION_SAMPLES, "batch": CALIBRATION_BATCH,
                                     "seed": CALIBRATION_SEED,
                                     "latents": "numpy default_rng(seed).standard_normal, float32",
                                     "labels": "cycling 0..n_classes-1"})
                elif method == "dynamic":
                    quantize_dynamic(str(prepared), str(target), per_channel=True, weight_type=QuantType.QInt8)
                    description.update(activations="uint8, scale computed per call")
                else:
                    raise ExportError(f"unknown int8 method {method!r}: valid methods are static, dynamic")
        except ExportError:
            raise
        except Exception as exc:  # the quantizer raises anything from KeyError to its own errors
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
            raise ExportError(f"int8 quantization ({method}) of the generator failed: {reason}",
                              hint="export without onnx-int8") from exc
        quantized = onnx.load_model(str(target))
    # The pre-processing step tags the graph (onnx.infer, onnx.quant.pre_process); the artifact
    # carries ganport's metadata only, like every other file of the package.
    del quantized.metadata_props[:]
    ops = sorted({n.op_type for n in quantized.graph.node})
    description["operators"] = ops
    logger.info("quantized the generator to int8 (%s): %s", method, ", ".join(ops))
    return quantized, description


def write_onnx_int8(job: ExportJob) -> list[Artifact]:
    """The ``onnx-int8`` format: ``model.int8.onnx`` (the generator; see the module docstring).

    Args:
        job: the export job; ``job.info.quantization`` is filled in.

    Returns:
        The one artifact, verified later with the int8 tolerance.
    """
    model, exporter = build_onnx(job, "generator")
    quantized, description = quantize(job, model)
    from ganport.export.verify import TOLERANCE_INT8

    description["verify_tolerance"] = TOLERANCE_INT8
    job.info.quantization = description
    return [Artifact(key=job.files_key("generator", "onnx", VARIANT),
                     relpath=job.file_name("generator", ".onnx", f".{VARIANT}"), format="onnx-int8",
                     role="generator", exporter=exporter, load=load_onnx, precision=VARIANT,
                     save=lambda path, metadata: save_onnx(quantized, path, metadata))]
