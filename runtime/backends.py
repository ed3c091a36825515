"""Inference backends: one small class per artifact format, all called the same way.

A backend wraps one loaded artifact (generator or encoder) and is called with a dict of named
numpy inputs (``z`` and ``label``, or ``image``), returning the one float32 numpy output.

* ``onnx`` (default): onnxruntime, CPUExecutionProvider, or CUDAExecutionProvider for
  ``device="cuda"``. After the session is created the providers really in use are checked: asking
  for CUDA and getting CPU (a CPU-only onnxruntime, a missing CUDA library, no GPU) is an error,
  never a silent fallback. On CUDA, IO binding lets onnxruntime allocate the output on the GPU and
  copy it back once, instead of staging through its default CPU output buffers.
* ``onnx-int8``: the same onnxruntime session over ``model.int8.onnx``, the generator quantized to
  int8 by ``ganport export --format onnx-int8`` (an AAE's encoder stays ``encoder.onnx``, fp32).
  The artifact must say it is int8 in its own metadata (``manifest.PRECISION_KEY``), and
  ``model.onnx`` must not: a file copied under the other name is refused on load.
* ``torchscript``: ``torch.jit.load``; ``pt2``: ``torch.export.load(...).module()``.

Nothing here imports torch or onnxruntime at module level: ``import ganport.runtime`` must work
in the torch-free edge install, and before onnxruntime is even installed.
"""

from __future__ import annotations

import importlib
import json
import logging
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ganport.errors import BackendUnavailableError, InvalidInputError, PackageError
from ganport.quiet import quiet_loggers
from ganport.runtime.manifest import METADATA_FILE, ModelInfo

logger = logging.getLogger(__name__)

__all__ = ["Backend", "BackendSpec", "BACKENDS", "TensorSpec", "open_backend", "parse_device", "backend_for_file"]


@dataclass(frozen=True)
class BackendSpec:
    """Where a backend's artifacts live in a package: ``info.files`` keys and default file names."""

    name: str
    suffix: str
    model_key: str
    model_file: str
    encoder_key: str
    encoder_file: str
    #: Triton's ``platform`` and ``backend`` names for this format (model config, KServe metadata).
    triton_platform: str = ""
    triton_backend: str = ""
    #: Precision of the generator artifact (``fp32``, ``int8``); the encoder is always fp32.
    precision: str = "fp32"
    #: Engine that runs it: ``onnxruntime`` or ``torch``.
    engine: str = "onnxruntime"


#: The backends, by name: the one table (the CLIs' ``--backend`` choices are its keys).
BACKENDS: dict[str, BackendSpec] = {
    spec.name: spec for spec in (
        BackendSpec("onnx", ".onnx", "onnx", "model.onnx", "encoder_onnx", "encoder.onnx",
                    "onnxruntime_onnx", "onnxruntime"),
        BackendSpec("onnx-int8", ".int8.onnx", "onnx_int8", "model.int8.onnx", "encoder_onnx", "encoder.onnx",
                    "onnxruntime_onnx", "onnxruntime", precision="int8"),
        BackendSpec("torchscript", ".ts", "torchscript", "model.ts", "encoder_torchscript", "encoder.ts",
                    "pytorch_libtorch", "pytorch", engine="torch"),
        BackendSpec("pt2", ".pt2", "pt2", "model.pt2", "encoder_pt2", "encoder.pt2", "pytorch_pt2", "pytorch",
                    engine="torch"),
    )
}


def backend_for_file(path: Path) -> str | None:
    """The backend that reads a lone artifact file, by suffix (``.int8.onnx``, ``.onnx``, ``.ts``, ``.pt2``).

    Example:
        >>> backend_for_file(Path("model.int8.onnx")), backend_for_file(Path("model.onnx"))
        ('onnx-int8', 'onnx')
    """
    for spec in sorted(BACKENDS.values(), key=lambda s: -len(s.suffix)):
        if path.name.endswith(spec.suffix):
            return spec.name
    return None


def parse_device(device: str) -> tuple[str, int]:
    """Split ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` into ``(type, index)``.

    Example:
        >>> parse_device("cuda:1")
        ('cuda', 1)
    """
    text = str(device).strip().lower()
    kind, _, index = text.partition(":")
    if kind == "cpu" and not index:
        return "cpu", 0
    if kind == "cuda" and (not index or index.isdigit()):
        return "cuda", int(index or 0)
    raise InvalidInputError(f"unknown device {device!r}: valid devices are cpu, cuda, cuda:N")


@dataclass(frozen=True)
class TensorSpec:
    """One input or output as the artifact itself declares it.

    Args:
        name: the tensor's name.
        shape: one entry per axis: the static size, or None for a dynamic (symbolic) axis.
    """

    name: str
    shape: tuple[int | None, ...]

    def describe(self) -> str:
        """``[N, 100]``-style text (dynamic axes shown as N)."""
        return "[" + ", ".join("N" if d is None else str(d) for d in self.shape) + "]"


class Backend:
    """One loaded artifact. Subclasses set the attributes and implement :meth:`__call__`.

    Attributes:
        name: ``onnx``, ``torchscript`` or ``pt2``.
        path: the artifact file.
        device: the device really used, ``cpu`` or ``cuda:N``.
        providers: what executes the graph: onnxruntime's providers in priority order, or the
            torch device for the torch backends.
        input_names: the artifact's input names, in call order.
    """

    name: str
    path: Path
    device: str
    providers: list[str]
    input_names: tuple[str, ...]

    def __call__(self, feeds: Mapping[str, np.ndarray]) -> np.ndarray:
        raise NotImplementedError

    def metadata(self) -> dict[str, str]:
        """The ganport metadata embedded in the artifact (one JSON value per key)."""
        raise NotImplementedError

    def signature(self) -> tuple[list[TensorSpec], list[TensorSpec]] | None:
        """The inputs and outputs the artifact declares, or None where the format does not say
        (TorchScript and pt2 take positional tensors; the runtime checks them with a probe call)."""
        return None

    def check_inputs(self, expected: Sequence[str]) -> None:
        """Raise PackageError when the artifact's inputs are not ``expected`` (the package contract)."""
        if tuple(self.input_names) != tuple(expected):
            raise PackageError(f"{self.path} has inputs {list(self.input_names)}, expected {list(expected)}",
                               hint="re-export the model with `ganport export`")

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.path.name} on {self.device} via {self.providers}>"


# ---------------------------------------------------------------------------------------- ONNX

def _import_onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError as exc:
        raise BackendUnavailableError(
            "backend 'onnx' needs onnxruntime, which is not installed",
            hint="pip install 'ganport[cpu]' (or 'ganport[gpu]' for CUDA)") from exc
    return onnxruntime


_ORT_ERROR = re.compile(r"^\[ONNXRuntimeError\] : \d+ : (\w+) : (.*)$", re.S)


def _ort_reason(exc: BaseException, path: Path) -> str:
    """onnxruntime's error text without its ``[ONNXRuntimeError] : N :`` prefix and the file
    path it repeats: ``INVALID_PROTOBUF: Protobuf parsing failed.``"""
    text = str(exc).strip()
    match = _ORT_ERROR.match(text)
    if match is None:
        return text
    code, detail = match.groups()
    detail = re.sub(rf"^Load model from {re.escape(str(path))} failed:\s*", "", detail.strip())
    return f"{code}: {detail}"


def _loads_on_cpu(ort: Any, path: Path) -> bool:
    """Whether ``path`` opens on the CPU provider: tells a CUDA failure from a bad file."""
    try:
        ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception:
        return False
    return True


# onnxruntime type strings -> numpy dtypes, for the inputs we feed (fp16 graphs take fp16 z).
_ORT_DTYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(int64)": np.int64,
               "tensor(int32)": np.int32, "tensor(double)": np.float64}


class OnnxBackend(Backend):
    """onnxruntime session on CPU or CUDA (see the module docstring)."""

    name = "onnx"

    def __init__(self, path: Path, device: str = "cpu", threads: int | None = None, spin: bool = True):
        ort = _import_onnxruntime()
        kind, index = parse_device(device)
        options = ort.SessionOptions()
        # Warnings and errors onnxruntime would print from C++ (a failing node, an unused
        # initializer) repeat what the Python exception says, or say nothing a ganport user can act
        # on; errors come back as exceptions that ganport turns into one line.
        options.log_severity_level = 3
        self._run_options = ort.RunOptions()
        self._run_options.log_severity_level = 4
        if threads:
            options.intra_op_num_threads = int(threads)
            options.inter_op_num_threads = 1
        if not spin:
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            options.add_session_config_entry("session.inter_op.allow_spinning", "0")
        if kind == "cuda":
            available = ort.get_available_providers()
            if "CUDAExecutionProvider" not in available:
                raise BackendUnavailableError(
                    f"device {device!r} requested but this onnxruntime has no CUDA provider "
                    f"(available: {', '.join(available)})",
                    hint="pip uninstall onnxruntime && pip install 'ganport[gpu]', or use device='cpu'")
            # CPU stays listed after CUDA for the rare op CUDA lacks; that is onnxruntime's
            # per-node placement, not a fallback for the whole graph (checked below).
            providers: list[Any] = [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"]
        else:
            providers = ["CPUExecutionProvider"]
        try:
            self.session = ort.InferenceSession(str(path), sess_options=options, providers=providers)
        except Exception as exc:  # onnxruntime raises its own exception types for bad files
            if kind == "cuda" and _loads_on_cpu(ort, path):
                raise BackendUnavailableError(f"device {device!r} requested but onnxruntime could not start "
                                              f"CUDA for {path.name}: {exc}",
                                              hint="check the GPU driver and CUDA/cuDNN libraries, or use "
                                                   "device='cpu'") from exc
            raise PackageError(f"cannot load ONNX model {path}: {_ort_reason(exc, path)}",
                               hint="re-export the package with `ganport export CHECKPOINT -o DIR --force`") from exc
        self.providers = list(self.session.get_providers())
        if kind == "cuda" and (not self.providers or self.providers[0] != "CUDAExecutionProvider"):
            raise BackendUnavailableError(
                f"device {device!r} requested but onnxruntime could not start CUDA for {path.name} "
                f"(session providers: {', '.join(self.providers)})",
                hint="check the GPU driver and CUDA/cuDNN libraries onnxruntime-gpu needs, or use device='cpu'")
        self.path = path
        self.device = f"cuda:{index}" if kind == "cuda" else "cpu"
        self._device_id = index
        inputs = self.session.get_inputs()
        self.input_names = tuple(i.name for i in inputs)
        self._input_dtypes = {i.name: _ORT_DTYPES.get(i.type) for i in inputs}
        self._output_name = self.session.get_outputs()[0].name
        self._signature = ([_tensor_spec(i) for i in inputs], [_tensor_spec(o) for o in self.session.get_outputs()])
        logger.info("loaded %s with onnxruntime providers %s", path, self.providers)

    def metadata(self) -> dict[str, str]:
        return dict(self.session.get_modelmeta().custom_metadata_map)

    def signature(self) -> tuple[list[TensorSpec], list[TensorSpec]]:
        return list(self._signature[0]), list(self._signature[1])

    def __call__(self, feeds: Mapping[str, np.ndarray]) -> np.ndarray:
        feeds = {name: self._cast(name, array) for name, array in feeds.items()}
        if self.device == "cpu":
            output = self.session.run([self._output_name], feeds, self._run_options)[0]
        else:
            # A binding per call: sessions are thread-safe, bindings are not.
            binding = self.session.io_binding()
            for name, array in feeds.items():
                binding.bind_cpu_input(name, array)
            binding.bind_output(self._output_name, "cuda", self._device_id)
            self.session.run_with_iobinding(binding, self._run_options)
            output = binding.copy_outputs_to_cpu()[0]
        return np.asarray(output, dtype=np.float32)

    def _cast(self, name: str, array: np.ndarray) -> np.ndarray:
        dtype = self._input_dtypes.get(name)
        return np.ascontiguousarray(array if dtype is None else array.astype(dtype, copy=False))


def _tensor_spec(node: Any) -> TensorSpec:
    """onnxruntime NodeArg -> TensorSpec (symbolic or unknown dims become None)."""
    shape = node.shape if isinstance(node.shape, (list, tuple)) else []
    return TensorSpec(node.name, tuple(d if isinstance(d, int) and d >= 0 else None for d in shape))


# ---------------------------------------------------------------------------------------- torch

def _import_torch(backend: str) -> Any:
    try:
        # importlib keeps torch visibly out of this module's imports: the edge install has none.
        torch = importlib.import_module("torch")
    except ImportError as exc:
        raise BackendUnavailableError(
            f"backend {backend!r} needs PyTorch, which is not installed",
            hint="use backend='onnx' (no torch needed), or pip install torch") from exc
    return torch


def _torch_device(torch: Any, device: str) -> str:
    kind, index = parse_device(device)
    if kind == "cpu":
        return "cpu"
    if not torch.cuda.is_available():
        raise BackendUnavailableError(
            f"device {device!r} requested but this PyTorch ({torch.__version__}) sees no CUDA device",
            hint="install a CUDA build of torch, or use device='cpu' (or backend='onnx' with 'ganport[gpu]')")
    if index >= torch.cuda.device_count():
        raise BackendUnavailableError(f"device {device!r} requested but only "
                                      f"{torch.cuda.device_count()} CUDA device(s) exist")
    return f"cuda:{index}"


# Extra-file keys to ask a TorchScript/pt2 artifact for: one per ModelInfo field (the contract in
# docs/ARCHITECTURE.md), plus the single JSON file export also writes (the same dict, one object).
_METADATA_KEYS = tuple(ModelInfo.__dataclass_fields__)


def _decode_extra_files(extra: Mapping[str, Any]) -> dict[str, str]:
    """Metadata from TorchScript/pt2 extra files; absent files come back empty and are dropped."""
    text = {key: value.decode("utf-8") if isinstance(value, bytes) else str(value)
            for key, value in extra.items() if value}
    bundled = text.pop(METADATA_FILE, "")
    if bundled:
        try:
            decoded = json.loads(bundled)
        except ValueError:
            decoded = None
        if isinstance(decoded, dict):
            # Per-key files win; the bundle fills in what they lack.
            text = {**{str(k): v if isinstance(v, str) else json.dumps(v) for k, v in decoded.items()}, **text}
    return text


#: torch loggers that report load failures the exception repeats.
_TORCH_LOAD_LOGGERS = ("torch.export", "torch._export", "torch.jit", "torch.serialization")


class TorchModuleBackend(Backend):
    """Shared call path of the TorchScript and pt2 backends."""

    def __init__(self, path: Path, device: str = "cpu", threads: int | None = None):
        self.torch = _import_torch(self.name)
        self._expected: tuple[str, ...] = ()
        self.path = path
        self.device = _torch_device(self.torch, device)
        self.providers = [f"torch:{self.device}"]
        if threads:
            # Process-wide in torch: the last Generator loaded with ``threads`` wins.
            self.torch.set_num_threads(int(threads))
        extra = {key: "" for key in (*_METADATA_KEYS, METADATA_FILE)}
        try:
            # torch.jit.* warns that it is deprecated in favour of torch.export, and torch.export.load
            # logs a traceback of a corrupt file before it raises: not the user's concern (the error
            # below says what is wrong in one line).
            with warnings.catch_warnings(), quiet_loggers(_TORCH_LOAD_LOGGERS, logging.CRITICAL):
                warnings.filterwarnings("ignore", category=DeprecationWarning)
                warnings.filterwarnings("ignore", category=FutureWarning)
                self.module = self._load(extra)
        except BackendUnavailableError:
            raise
        except Exception as exc:  # torch raises RuntimeError/ValueError/zipfile errors for bad files
            # torch appends paragraphs of advice ("This is an internal miniz error. If you are..."):
            # the first sentence of the first line says what is wrong.
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0].split(". ")[0][:300]
            raise PackageError(f"cannot load {self.name} model {path}: {reason}",
                               hint="the file is damaged or not a model; re-export the package") from exc
        self._metadata = _decode_extra_files(extra)
        logger.info("loaded %s with torch %s on %s", path, self.torch.__version__, self.device)

    def _load(self, extra: dict[str, Any]) -> Any:
        raise NotImplementedError

    @property
    def input_names(self) -> tuple[str, ...]:  # type: ignore[override]
        # Torch modules take positional inputs; the package contract fixes their order.
        return self._expected

    def check_inputs(self, expected: Sequence[str]) -> None:
        self._expected = tuple(expected)

    def metadata(self) -> dict[str, str]:
        return dict(self._metadata)

    def __call__(self, feeds: Mapping[str, np.ndarray]) -> np.ndarray:
        torch = self.torch
        tensors = [torch.from_numpy(np.array(feeds[name], copy=True, order="C")).to(self.device)
                   for name in self._expected]
        with torch.inference_mode():
            output = self.module(*tensors)
        return output.detach().to("cpu").numpy().astype(np.float32, copy=False)


class TorchScriptBackend(TorchModuleBackend):
    """A TorchScript ``.ts`` file via ``torch.jit.load``."""

    name = "torchscript"

    def _load(self, extra: dict[str, Any]) -> Any:
        module = self.torch.jit.load(str(self.path), map_location=self.device, _extra_files=extra)
        return module.eval()


class Pt2Backend(TorchModuleBackend):
    """A ``torch.export`` program (``.pt2``) via ``torch.export.load(...).module()``."""

    name = "pt2"

    def _load(self, extra: dict[str, Any]) -> Any:
        program = self.torch.export.load(str(self.path), extra_files=extra)
        if self.device != "cpu":
            # Exported programs record the device of every constant; moving the module alone
            # would leave some on the CPU.
            passes = importlib.import_module("torch.export.passes")
            program = passes.move_to_device_pass(program, self.device)
        return program.module()


_CLASSES: dict[str, type[Backend]] = {"onnx": OnnxBackend, "onnx-int8": OnnxBackend,
                                      "torchscript": TorchScriptBackend, "pt2": Pt2Backend}


def open_backend(backend: str, path: str | Path, device: str = "cpu", threads: int | None = None,
                 spin: bool = True) -> Backend:
    """Load one artifact with the named backend.

    Args:
        backend: a key of :data:`BACKENDS` (``onnx``, ``onnx-int8``, ``torchscript``, ``pt2``).
        path: the artifact file.
        device: ``cpu``, ``cuda`` or ``cuda:N``.
        threads: CPU threads for the backend (onnxruntime intra-op threads; ``torch.set_num_threads``),
            or None for the library default.
        spin: onnxruntime only: whether idle intra-op threads busy-wait for the next call
            (``session.intra_op.allow_spinning``; on by default, off for servers).

    Returns:
        The loaded :class:`Backend`.

    Example:
        >>> model = open_backend("onnx", "pkg/model.onnx")      # doctest: +SKIP
        >>> model({"z": z, "label": labels}).shape               # doctest: +SKIP
        (16, 1, 28, 28)
    """
    if backend not in _CLASSES:
        raise InvalidInputError(f"unknown backend {backend!r}: valid backends are {', '.join(_CLASSES)}")
    if BACKENDS[backend].engine == "onnxruntime":
        loaded: Backend = OnnxBackend(Path(path), device=device, threads=threads, spin=spin)
        loaded.name = backend
        return loaded
    return _CLASSES[backend](Path(path), device=device, threads=threads)
