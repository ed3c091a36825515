"""``Generator``: an exported model package loaded for use inside any Python program.

The latents are drawn here, on the caller's side, from ``numpy.random.default_rng(seed)``: the
graphs hold no random numbers, so the same seed gives the same images on every backend and
device. Every public method validates its arguments and raises
:class:`~ganport.errors.InvalidInputError` with a message naming the problem and the valid choices.

Example:
    >>> from ganport.runtime import Generator, make_grid, save_png
    >>> gen = Generator.load("packages/glyphs")                 # doctest: +SKIP
    >>> images = gen.generate(16, labels="A", seed=1)           # uint8 [16, 28, 28, 1]  # doctest: +SKIP
    >>> save_png("grid.png", make_grid(images, nrow=4))         # doctest: +SKIP
    >>> save_png("word.png", gen.render_word("Hello 2026", seed=1))  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from ganport.errors import InvalidInputError, ModelNotFoundError, PackageError
from ganport.runtime import words
from ganport.runtime.builtins import resolve_model_path
from ganport.runtime.backends import BACKENDS, Backend, TensorSpec, backend_for_file, open_backend
from ganport.runtime.images import from_uint8, to_uint8
from ganport.runtime.manifest import MANIFEST_NAME, ModelInfo, artifact_precision, read_manifest

logger = logging.getLogger(__name__)

__all__ = ["Generator", "interpolate_latents", "INTERPOLATION_MODES"]

INTERPOLATION_MODES = ("linear", "slerp")
_INT_LITERAL = re.compile(r"^\s*\d+\s*$")


def _check_count(value: object, name: str, minimum: int = 0) -> int:
    """Validate a count (n, steps, max_batch...)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise InvalidInputError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def interpolate_latents(z0: np.ndarray, z1: np.ndarray, steps: int, mode: str = "linear") -> np.ndarray:
    """Points from ``z0`` to ``z1`` (both included), evenly spaced in ``t``.

    Args:
        z0, z1: float32 ``[latent_dim]`` end points.
        steps: number of points (1 gives just ``z0``).
        mode: ``linear`` (straight line) or ``slerp`` (great circle, keeps the norm typical of
            Gaussian latents so the middle frames do not wash out); slerp falls back to linear for
            (anti-)parallel end points.

    Returns:
        float32 ``[steps, latent_dim]``.

    Example:
        >>> interpolate_latents(np.zeros(2, np.float32), np.ones(2, np.float32), 3)[:, 0].tolist()
        [0.0, 0.5, 1.0]
    """
    if mode not in INTERPOLATION_MODES:
        raise InvalidInputError(f"unknown interpolation mode {mode!r}: valid modes are "
                                f"{', '.join(INTERPOLATION_MODES)}")
    start, end = z0.astype(np.float64), z1.astype(np.float64)
    t = np.linspace(0.0, 1.0, steps)[:, None]
    if mode == "slerp":
        norms = np.linalg.norm(start) * np.linalg.norm(end)
        if norms > 0:
            omega = np.arccos(np.clip(np.dot(start, end) / norms, -1.0, 1.0))
            if np.sin(omega) > 1e-6:
                sin = np.sin(omega)
                return (np.sin((1.0 - t) * omega) / sin * start + np.sin(t * omega) / sin * end).astype(np.float32)
    return ((1.0 - t) * start + t * end).astype(np.float32)


# ----------------------------------------------------------------------------- load-time checks

_REEXPORT = "re-export the model with `ganport export`, or correct the manifest"


def _mismatch(backend: Backend, message: str) -> PackageError:
    return PackageError(f"{backend.path} does not match the package: {message}", hint=_REEXPORT)


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]


def _describe_difference(claimed: Any, found: Any, claims: str) -> str:
    """``class_names`` differ -> the first differing entry, not two lists of 62 names."""
    if isinstance(claimed, list) and isinstance(found, list):
        if len(claimed) != len(found):
            return f"{len(claimed)} class names in {claims} but {len(found)} in the model's own metadata"
        index = next(i for i, (a, b) in enumerate(zip(claimed, found)) if a != b)
        return f"class {index} is {claimed[index]!r} in {claims} but {found[index]!r} in the model's own metadata"
    return f"{claimed!r} in {claims} but {found!r} in the model's own metadata"


def check_artifact(info: ModelInfo, backend: Backend, role: str, claims: str,
                   compare_metadata: bool = True) -> None:
    """Compare what ``info`` claims with the artifact's own inputs/outputs and metadata.

    Args:
        info: the package's description (manifest.json, or a lone file's metadata).
        backend: the loaded artifact.
        role: ``generator`` or ``encoder``.
        claims: where ``info`` came from, for messages.
        compare_metadata: also compare the fields of
            :data:`~ganport.runtime.manifest.MODEL_FIELDS` with the artifact's embedded ganport
            metadata (when it carries any), and its precision with the backend's (``BackendSpec.precision``).

    Raises:
        PackageError: one line naming the field, the claimed value and the artifact's value.
    """
    spec = info.io_spec()
    expected_in = spec["inputs"] if role == "generator" else spec["encoder_inputs"]
    expected_out = spec["outputs"] if role == "generator" else spec["encoder_outputs"]
    names = [t["name"] for t in expected_in]
    signature = backend.signature()
    if signature is not None:
        inputs, outputs = signature
        got = [t.name for t in inputs]
        if got != names:
            if role == "generator" and sorted(got) in (["z"], ["label", "z"]) and info.conditional != ("label" in got):
                what = ("conditional: inputs z, label" if info.conditional else "unconditional: input z only")
                raise _mismatch(backend, f"kind is {info.kind!r} ({what}) in {claims} but the model's inputs "
                                         f"are {got}")
            raise _mismatch(backend, f"the model's inputs are {got}, the package contract says {names}")
        if not outputs or outputs[0].name != expected_out[0]["name"]:
            raise _mismatch(backend, f"the model's outputs are {[t.name for t in outputs]}, the package contract "
                                     f"says [{expected_out[0]['name']!r}]")
        for declared, wanted, kind in [*zip(inputs, expected_in, ["input"] * len(inputs)),
                                       (outputs[0], expected_out[0], "output")]:
            _check_shape(backend, info, declared, wanted["shape"], kind, claims)
    backend.check_inputs(names)
    backend_spec = BACKENDS.get(backend.name)
    if compare_metadata and backend_spec is not None:
        # A float32 file where the package names its int8 one (or the reverse) would run and
        # quietly give other pictures: the artifact's own precision must be the backend's. (A
        # lone file is its own claim: model.fp16.onnx loads with the onnx engine as itself.)
        wanted = backend_spec.precision if role == "generator" else "fp32"
        found_precision = artifact_precision(backend.metadata())
        if found_precision != wanted:
            key = backend_spec.model_key if role == "generator" else backend_spec.encoder_key
            raise _mismatch(backend, f"precision is {wanted!r} for backend {backend.name!r} (files.{key} in "
                                     f"{claims}) but {found_precision!r} in the model's own metadata")
    if compare_metadata:
        metadata = backend.metadata()
        if "kind" in metadata:
            found = ModelInfo.from_metadata(metadata, source=str(backend.path))
            for field_name, claimed, actual in info.differences(found)[:1]:
                if field_name == "class_names":
                    raise _mismatch(backend, "class_names differ: " + _describe_difference(claimed, actual, claims))
                raise _mismatch(backend, f"{field_name} is {claimed!r} in {claims} but {actual!r} in the "
                                         f"model's own metadata")


def _check_shape(backend: Backend, info: ModelInfo, declared: TensorSpec, wanted: list[int], kind: str,
                 claims: str) -> None:
    """One tensor's declared shape against the contract; names the manifest field that disagrees."""
    where = f"{kind} {declared.name} has shape {declared.describe()}"
    if len(declared.shape) != len(wanted):
        raise _mismatch(backend, f"{where}, the package contract says rank {len(wanted)} "
                                 f"({TensorSpec(declared.name, tuple(None if d < 0 else d for d in wanted)).describe()})")
    for axis, (have, want) in enumerate(zip(declared.shape, wanted)):
        if axis == 0 or have is None or want < 0 or have == want:
            continue
        if declared.name == "z":
            raise _mismatch(backend, f"latent_dim is {info.latent_dim} in {claims} but {have} in the model ({where})")
        shown = [d if d is not None else "?" for d in declared.shape[1:]]
        raise _mismatch(backend, f"image_shape is {info.image_shape} in {claims} but {shown} in the model ({where})")


def probe_artifacts(info: ModelInfo, model: Backend, encoder: Backend | None, claims: str) -> None:
    """One tiny call (batch <= 2) per artifact where declared shapes cannot tell everything.

    Catches what no declared shape shows: the shapes of TorchScript/pt2 models (they declare none),
    a class count larger than the model's label embedding (labels ``0`` and ``n_classes - 1`` are
    tried), and an AAE encoder that does not take the package's images. An unconditional ONNX
    generator is not called: its declared shapes were checked already.

    Raises:
        PackageError: naming the manifest field whose value the model rejects.
    """
    if info.conditional or model.signature() is None:
        _probe_generator(info, model, claims)
    if encoder is not None:
        _probe_encoder(info, encoder, claims)


def _probe_generator(info: ModelInfo, model: Backend, claims: str) -> None:
    d = info.latent_dim
    feeds: dict[str, np.ndarray] = {"z": np.zeros((1, d), np.float32)}
    labels = [0]
    if info.conditional:
        labels = [0, info.n_classes - 1] if info.n_classes > 1 else [0]
        feeds = {"z": np.zeros((len(labels), d), np.float32), "label": np.array(labels, np.int64)}
    try:
        output = model(feeds)
    except Exception as exc:  # any backend failure on well-formed inputs means the package is wrong
        if info.conditional and len(labels) > 1:
            try:
                model({"z": feeds["z"][:1], "label": feeds["label"][:1]})
            except Exception:
                pass
            else:
                raise _mismatch(model, f"{claims} says n_classes={info.n_classes} but the model fails for label "
                                       f"{info.n_classes - 1}: {_first_line(exc)}") from exc
        given = f"kind={info.kind}, latent_dim={d}" + (", label 0" if info.conditional else ", no label")
        raise _mismatch(model, f"the model fails on the inputs {claims} describes ({given}): "
                               f"{_first_line(exc)}") from exc
    want = (len(labels), *info.image_shape)
    if tuple(output.shape) != want:
        raise _mismatch(model, f"image_shape is {info.image_shape} in {claims} but the model returns images of "
                               f"shape {list(output.shape[1:])}")


def _probe_encoder(info: ModelInfo, encoder: Backend, claims: str) -> None:
    d = info.latent_dim
    try:
        latents = encoder({"image": np.zeros((1, *info.image_shape), np.float32)})
    except Exception as exc:
        raise _mismatch(encoder, f"the encoder fails on images of the shape {claims} describes "
                                 f"(image_shape={info.image_shape}): {_first_line(exc)}") from exc
    if tuple(latents.shape) != (1, d):
        raise _mismatch(encoder, f"latent_dim is {d} in {claims} but the encoder returns latents of shape "
                                 f"{list(latents.shape[1:])}")


class Generator:
    """A loaded model package: latents and labels in, uint8 images out.

    Create it with :meth:`Generator.load`. Instances are safe to share between threads (the
    backends' sessions/modules are; the Generator keeps no per-call state).

    Attributes:
        info: the package's :class:`~ganport.runtime.manifest.ModelInfo`.
        max_batch: largest batch sent to the backend in one call; bigger requests are split.
    """

    def __init__(self, info: ModelInfo, model: Backend, encoder: Backend | None = None, max_batch: int = 256):
        self.info = info
        self.max_batch = _check_count(max_batch, "max_batch", 1)
        self._model = model
        self._encoder = encoder
        self._class_index = {name: index for index, name in enumerate(info.class_names)}
        folded: dict[str, list[int]] = {}
        for index, name in enumerate(info.class_names):
            folded.setdefault(name.casefold(), []).append(index)
        # Case-insensitive name lookup only where it is unambiguous ("a" -> "A" on an uppercase model).
        self._folded_index = {key: indices[0] for key, indices in folded.items() if len(indices) == 1}
        self._charmap = words.character_map(info.class_names) if info.conditional else {}

    # ----------------------------------------------------------------------------- loading

    @classmethod
    def load(cls, path: str | Path, backend: str | None = None, device: str = "cpu",
             threads: int | None = None, max_batch: int = 256, spin: bool = True) -> "Generator":
        """Load a model package directory, a single ``.onnx`` / ``.ts`` / ``.pt2`` file, or a
        built-in model (``"builtin:glyphs"``, shipped inside ganport; see :mod:`ganport.runtime.builtins`).

        Args:
            path: package directory (with ``manifest.json``), one artifact file, whose embedded
                metadata then describes the model, or ``builtin:NAME``.
            backend: a key of :data:`~ganport.runtime.backends.BACKENDS`: ``onnx`` (float32),
                ``onnx-int8`` (``model.int8.onnx``, from ``ganport export --format onnx-int8``),
                ``torchscript`` or ``pt2``; default ``onnx`` for a directory and the file's own
                format for a single file.
            device: ``cpu``, ``cuda`` or ``cuda:N``. Asking for CUDA where it cannot run raises
                :class:`~ganport.errors.BackendUnavailableError`; there is no silent CPU fallback.
            threads: CPU threads for inference (onnxruntime intra-op threads, or
                ``torch.set_num_threads``), default: the backend's choice.
            max_batch: largest batch per backend call.
            spin: let onnxruntime's intra-op threads busy-wait between calls (its default; fastest
                for back-to-back calls in one program). A server passes False: between small
                batches the spinning took ~40% of a 2-core machine.

        Returns:
            The :class:`Generator`.

        Raises:
            ModelNotFoundError: nothing at ``path``.
            PackageError: not a package, or the requested artifact is missing or malformed.
            BackendUnavailableError: torch/onnxruntime missing, or the device unavailable.

        Example:
            >>> gen = Generator.load("packages/glyphs", backend="onnx", device="cpu")  # doctest: +SKIP
            >>> gen.info.kind, gen.providers                                        # doctest: +SKIP
            ('cgan', ['CPUExecutionProvider'])
        """
        path = resolve_model_path(path)
        if backend is not None and backend not in BACKENDS:
            raise InvalidInputError(f"unknown backend {backend!r}: valid backends are {', '.join(BACKENDS)}")
        if threads is not None:
            _check_count(threads, "threads", 1)
        _check_count(max_batch, "max_batch", 1)
        if not path.exists():
            raise ModelNotFoundError(f"no model package or file at {path}")
        if path.is_dir():
            info = read_manifest(path)
            backend = backend or "onnx"
            spec = BACKENDS[backend]
            artifact = path / info.files.get(spec.model_key, spec.model_file)
            if not artifact.is_file():
                present = [name for name, s in BACKENDS.items()
                           if (path / info.files.get(s.model_key, s.model_file)).is_file()]
                raise PackageError(f"package {path} has no {backend} artifact ({artifact.name} not found)",
                                   hint=f"available backends: {', '.join(present) or 'none'}")
            model = open_backend(backend, artifact, device, threads, spin=spin)
            directory = path
        else:
            file_backend = backend_for_file(path)
            if file_backend is None:
                raise PackageError(f"{path} is neither a package directory nor a .onnx/.ts/.pt2 file",
                                   hint=f"pass the directory holding {MANIFEST_NAME}")
            if backend is not None and backend != file_backend:
                raise InvalidInputError(f"backend {backend!r} cannot load {path.name}: it is a {file_backend} file")
            backend = file_backend
            spec = BACKENDS[backend]
            model = open_backend(backend, path, device, threads, spin=spin)
            info = ModelInfo.from_metadata(model.metadata(), source=str(path))
            directory = path.parent
        # What the manifest (or, for a lone file, its own metadata) claims is checked against the
        # artifact before anything is served: a wrong latent_dim, image shape, label input or
        # class count is one PackageError here, not a failure inside onnxruntime on every call.
        claims = str(path / MANIFEST_NAME) if path.is_dir() else f"the metadata of {path.name}"
        check_artifact(info, model, "generator", claims, compare_metadata=path.is_dir())

        encoder = None
        if info.has_encoder:
            encoder_path = directory / info.files.get(spec.encoder_key, spec.encoder_file)
            if encoder_path.is_file():
                encoder = open_backend(backend, encoder_path, device, threads, spin=spin)
                check_artifact(info, encoder, "encoder", claims, compare_metadata=True)
            else:
                logger.warning("%s: AAE encoder %s not found; encode() will fail", path, encoder_path.name)
        probe_artifacts(info, model, encoder, claims)
        generator = cls(info, model, encoder, max_batch=max_batch)
        logger.info("loaded %s (%s, latent_dim %d, image %s) with %s on %s via %s", info.name, info.kind,
                    info.latent_dim, info.image_shape, backend, model.device, ", ".join(model.providers))
        return generator

    @property
    def backend_name(self) -> str:
        """The backend in use: ``onnx``, ``torchscript`` or ``pt2``."""
        return self._model.name

    @property
    def device(self) -> str:
        """The device really in use: ``cpu`` or ``cuda:N``."""
        return self._model.device

    @property
    def providers(self) -> list[str]:
        """onnxruntime providers in use (e.g. ``['CPUExecutionProvider']``), or ``['torch:cpu']``."""
        return list(self._model.providers)

    def __repr__(self) -> str:
        return (f"<Generator {self.info.name!r} kind={self.info.kind} backend={self.backend_name} "
                f"device={self.device}>")

    # ----------------------------------------------------------------------------- inputs

    def sample_latents(self, n: int, seed: int | None = None) -> np.ndarray:
        """Draw ``n`` latent vectors: ``numpy.random.default_rng(seed).standard_normal``.

        Args:
            n: number of vectors.
            seed: non-negative integer for reproducible draws, or None for fresh entropy.

        Returns:
            float32 ``[n, latent_dim]``.

        Example:
            >>> gen.sample_latents(2, seed=0).shape     # doctest: +SKIP
            (2, 100)
        """
        n = _check_count(n, "n")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0):
            raise InvalidInputError(f"seed must be a non-negative integer or None, got {seed!r}")
        rng = np.random.default_rng(None if seed is None else int(seed))
        return rng.standard_normal((n, self.info.latent_dim), dtype=np.float32)

    def resolve_labels(self, labels: Any, n: int) -> np.ndarray | None:
        """Turn user labels into the model's ``label`` input.

        Args:
            labels: None; one label (class index, or class name) used for all ``n`` images; or a
                sequence / array of ``n`` labels. A string is matched as a class name first
                (exactly, then case-insensitively where that is unambiguous), then, if it is a
                decimal integer, as a class index.
            n: number of images.

        Returns:
            int64 ``[n]`` for conditional models, None for unconditional ones. With ``labels=None``
            a conditional model cycles through its classes: ``0, 1, ..., n_classes-1, 0, ...``.

        Raises:
            InvalidInputError: labels for an unconditional model, an unknown name, an index out of
                range, or a sequence whose length is neither 1 nor ``n``.

        Example:
            >>> gen.resolve_labels("A", 3).tolist()     # doctest: +SKIP
            [10, 10, 10]
        """
        n = _check_count(n, "n")
        info = self.info
        if not info.conditional:
            if labels is None:
                return None
            raise InvalidInputError(f"model {info.name!r} (kind {info.kind}) is unconditional and takes no labels",
                                    hint="leave labels out")
        if labels is None:
            return np.arange(n, dtype=np.int64) % info.n_classes
        if isinstance(labels, (str, bytes, int, np.integer)) or (isinstance(labels, np.ndarray) and labels.ndim == 0):
            return np.full(n, self._label_index(labels.item() if isinstance(labels, np.ndarray) else labels),
                           dtype=np.int64)
        if isinstance(labels, np.ndarray) and labels.dtype.kind in "iu":
            if labels.size == 1:  # the common one-label request, without the array passes below
                return np.full(n, self._label_index(int(labels.reshape(-1)[0])), dtype=np.int64)
            resolved = labels.reshape(-1).astype(np.int64)
            if resolved.size and (resolved.min() < 0 or resolved.max() >= info.n_classes):
                bad = resolved[(resolved < 0) | (resolved >= info.n_classes)]
                self._label_index(int(bad[0]))  # raises with the standard message
        else:
            try:
                items = list(labels)
            except TypeError as exc:
                raise InvalidInputError(f"labels must be a class index, a class name or a sequence of them, "
                                        f"got {type(labels).__name__}") from exc
            resolved = np.array([self._label_index(item) for item in items], dtype=np.int64)
        if resolved.size == 1:
            return np.full(n, resolved[0], dtype=np.int64)
        if resolved.size != n:
            raise InvalidInputError(f"got {resolved.size} labels for {n} images: pass one label or exactly {n}")
        return resolved

    def _label_index(self, value: Any) -> int:
        """One label (index or name) -> class index."""
        info = self.info
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        if isinstance(value, str):
            if value in self._class_index:
                return self._class_index[value]
            if value.casefold() in self._folded_index:
                return self._folded_index[value.casefold()]
            # A class index has few digits: longer literals are refused before int() (which
            # raises past 4300 digits) could be asked to parse them.
            if len(value) <= 18 and _INT_LITERAL.match(value):
                value = int(value)
        if isinstance(value, (int, np.integer)) and not isinstance(value, bool) and 0 <= value < info.n_classes:
            return int(value)
        raise InvalidInputError(f"unknown label {value!r}: valid labels are 0..{info.n_classes - 1} "
                                f"or class names {words.summarize_names(info.class_names)}")

    def check_latents(self, z: Any, name: str = "z") -> np.ndarray:
        """Validate caller latents (what :meth:`run` and :meth:`decode` do first).

        Args:
            z: array-like ``[N, latent_dim]`` of real numbers.
            name: how error messages call it.

        Returns:
            float32 contiguous ``[N, latent_dim]``.

        Raises:
            InvalidInputError: wrong shape or dtype, NaN or infinite values (rows named).

        Example:
            >>> gen.check_latents([[0.0] * gen.info.latent_dim]).dtype   # doctest: +SKIP
            dtype('float32')
        """
        latent_dim = self.info.latent_dim
        try:
            array = np.asarray(z)
        except (ValueError, TypeError) as exc:
            raise InvalidInputError(f"{name} must be a numeric array [N, {latent_dim}]: {exc}") from exc
        if array.dtype.kind not in "fiu":
            raise InvalidInputError(f"{name} must be a float array [N, {latent_dim}], got dtype {array.dtype}")
        if array.ndim != 2 or array.shape[1] != latent_dim:
            raise InvalidInputError(f"{name} must have shape [N, {latent_dim}] (N latent vectors of length "
                                    f"{latent_dim}), got {list(array.shape)}")
        if array.dtype != np.float32 or not array.flags.c_contiguous:
            with np.errstate(over="ignore"):  # float64 beyond float32's range becomes inf, reported below
                array = np.ascontiguousarray(array, dtype=np.float32)
        finite = np.isfinite(array)
        if not finite.all():
            rows = np.flatnonzero(~finite.all(axis=1))
            shown = ", ".join(str(r) for r in rows[:8]) + (", ..." if rows.size > 8 else "")
            raise InvalidInputError(f"{name} contains NaN or infinite values (row(s) {shown})")
        return array

    def _check_images(self, images: Any) -> np.ndarray:
        """Validate encoder input; return float32 ``[N, C, H, W]`` in the model's value range."""
        c, h, w = self.info.image_shape
        low, high = self.info.value_range
        expected = (f"uint8 [N, {h}, {w}, {c}] (NHWC pixels) or float32 [N, {c}, {h}, {w}] in "
                    f"[{low:g}, {high:g}]")
        array = np.asarray(images)
        if array.dtype == np.uint8:
            if array.ndim == 3 and c == 1:
                array = array[..., None]
            if array.ndim != 4 or array.shape[1:] != (h, w, c):
                raise InvalidInputError(f"images must be {expected}; got uint8 shape {list(array.shape)}")
            return from_uint8(array, self.info.value_range)
        if array.dtype.kind != "f":
            raise InvalidInputError(f"images must be {expected}; got dtype {array.dtype}")
        if array.ndim != 4 or array.shape[1:] != (c, h, w):
            raise InvalidInputError(f"images must be {expected}; got {array.dtype} shape {list(array.shape)}")
        array = np.ascontiguousarray(array, dtype=np.float32)
        if not np.isfinite(array).all():
            raise InvalidInputError("images contain NaN or infinite values")
        tolerance = 1e-3 * (high - low)
        if array.size and (array.min() < low - tolerance or array.max() > high + tolerance):
            raise InvalidInputError(f"float images must lie in [{low:g}, {high:g}], got values in "
                                    f"[{array.min():g}, {array.max():g}]",
                                    hint="pass uint8 pixels, or scale with ganport.runtime.images.from_uint8")
        return array

    # ----------------------------------------------------------------------------- model calls

    def _call(self, backend: Backend, feeds: Mapping[str, np.ndarray], out_tail: tuple[int, ...]) -> np.ndarray:
        """Run ``backend`` in chunks of ``max_batch`` rows and check the output shape."""
        count = len(next(iter(feeds.values())))
        if count == 0:
            return np.zeros((0, *out_tail), np.float32)
        outputs = []
        for start in range(0, count, self.max_batch):
            chunk = {name: array[start:start + self.max_batch] for name, array in feeds.items()}
            output = backend(chunk)
            rows = len(next(iter(chunk.values())))
            if output.shape != (rows, *out_tail):
                raise PackageError(f"{backend.path.name} returned shape {list(output.shape)}, the package "
                                   f"declares {[rows, *out_tail]}", hint="re-export the model")
            outputs.append(output)
        return outputs[0] if len(outputs) == 1 else np.concatenate(outputs)

    def run(self, z: Any, labels: Any = None) -> np.ndarray:
        """The raw model call: latents (and labels) -> float32 images in the model's value range.

        Args:
            z: float ``[N, latent_dim]``, finite.
            labels: see :meth:`resolve_labels`.

        Returns:
            float32 ``[N, C, H, W]``. Requests larger than ``max_batch`` are split; the result is
            the same as one big call: bit for bit on onnxruntime CPU; torch may pick other GEMM
            kernels for other batch sizes, so the last float bit can differ there.

        Example:
            >>> gen.run(gen.sample_latents(4, seed=0), labels="A").shape   # doctest: +SKIP
            (4, 1, 28, 28)
        """
        z = self.check_latents(z)
        feeds = {"z": z}
        resolved = self.resolve_labels(labels, len(z))
        if resolved is not None:
            feeds["label"] = resolved
        return self._call(self._model, feeds, tuple(self.info.image_shape))

    def run_prepared(self, z: np.ndarray, labels: np.ndarray | None) -> np.ndarray:
        """:meth:`run` for inputs already validated by :meth:`check_latents` / :meth:`resolve_labels`.

        The server's batcher calls this on merged batches whose rows were each validated when
        their request arrived, so the checks are not repeated per batch.

        Args:
            z: float32 contiguous ``[N, latent_dim]``.
            labels: int64 ``[N]`` (conditional models) or None.

        Returns:
            float32 ``[N, C, H, W]``, the same as :meth:`run`.
        """
        feeds = {"z": z} if labels is None else {"z": z, "label": labels}
        return self._call(self._model, feeds, tuple(self.info.image_shape))

    def _pixels(self, images: np.ndarray) -> np.ndarray:
        return to_uint8(images, self.info.value_range)

    def generate(self, n: int, labels: Any = None, seed: int | None = None) -> np.ndarray:
        """Generate ``n`` images from seeded random latents.

        Args:
            n: number of images.
            labels: see :meth:`resolve_labels` (conditional models; None cycles through the classes).
            seed: for reproducible images (same seed -> same images on every backend).

        Returns:
            uint8 ``[n, H, W, C]``.

        Example:
            >>> gen.generate(16, labels="A", seed=1).shape     # doctest: +SKIP
            (16, 28, 28, 1)
        """
        z = self.sample_latents(n, seed)
        return self._pixels(self.run(z, labels))

    def decode(self, z: Any, labels: Any = None) -> np.ndarray:
        """Images from caller-supplied latents.

        Args:
            z: float ``[N, latent_dim]`` (wrong shape, NaN or inf -> InvalidInputError).
            labels: see :meth:`resolve_labels`.

        Returns:
            uint8 ``[N, H, W, C]``.

        Example:
            >>> gen.decode(np.zeros((1, gen.info.latent_dim), np.float32), labels="7").shape  # doctest: +SKIP
            (1, 28, 28, 1)
        """
        return self._pixels(self.run(z, labels))

    def encode(self, images: Any) -> np.ndarray:
        """Images -> latents with the AAE encoder (``decode(encode(x))`` reconstructs ``x``).

        Args:
            images: uint8 ``[N, H, W, C]`` pixels (``[N, H, W]`` for grayscale), or float32
                ``[N, C, H, W]`` in the model's value range (``[-1, 1]``).

        Returns:
            float32 ``[N, latent_dim]``.

        Raises:
            InvalidInputError: the model has no encoder (not an AAE) or the images are malformed.

        Example:
            >>> z = gen.encode(images)                      # doctest: +SKIP
            >>> reconstruction = gen.decode(z)              # doctest: +SKIP
        """
        info = self.info
        if not info.has_encoder:
            raise InvalidInputError(f"model {info.name!r} (kind {info.kind}) has no encoder: encode works only "
                                    f"for AAE models")
        if self._encoder is None:
            raise PackageError(f"model {info.name!r} is an AAE but its package has no {self.backend_name} "
                               f"encoder artifact", hint="re-export the model with its encoder")
        array = self._check_images(images)
        return self._call(self._encoder, {"image": array}, (info.latent_dim,))

    def interpolate(self, z0: Any, z1: Any, steps: int, labels: Any = None, mode: str = "linear") -> np.ndarray:
        """A latent walk from ``z0`` to ``z1``: the frames people use to explore a generator.

        Args:
            z0, z1: float ``[latent_dim]`` (or ``[1, latent_dim]``) end points.
            steps: number of frames, both end points included.
            labels: for conditional models, one label (the walk stays in that class) or ``steps``
                labels; None walks within class 0.
            mode: ``linear`` or ``slerp`` (see :func:`interpolate_latents`).

        Returns:
            uint8 ``[steps, H, W, C]``.

        Example:
            >>> z = gen.sample_latents(2, seed=1)                              # doctest: +SKIP
            >>> strip = gen.interpolate(z[0], z[1], steps=10, labels="A")      # doctest: +SKIP
        """
        steps = _check_count(steps, "steps", 1)
        ends = [self.check_latents(np.asarray(v).reshape(1, -1) if np.ndim(v) == 1 else v, name)
                for v, name in ((z0, "z0"), (z1, "z1"))]
        for end, name in zip(ends, ("z0", "z1")):
            if len(end) != 1:
                raise InvalidInputError(f"{name} must be one latent vector [{self.info.latent_dim}], "
                                        f"got {len(end)} rows")
        path = interpolate_latents(ends[0][0], ends[1][0], steps, mode)
        if labels is None and self.info.conditional:
            labels = 0
        return self._pixels(self.run(path, labels))

    # ----------------------------------------------------------------------------- words

    def plan_word(self, text: str, seed: int | None = None, noise: str = "per-glyph",
                  spacing: int | None = None, height: int | None = None, invert: bool = False,
                  trim: bool = True) -> words.WordPlan:
        """Plan a word rendering: map characters to classes and draw the latents (one batch).

        See :mod:`ganport.runtime.words` for the character mapping and layout rules.

        Args:
            text: what to write; ``\\n`` starts a new line, spaces are gaps.
            seed: for reproducible handwriting.
            noise: ``per-glyph`` (a new latent per glyph) or ``shared`` (one latent for all).
            spacing: pixels between glyphs, may be negative; default about 8% of ``height``.
            height: glyph height in pixels in the output; default the model's image height.
            invert: swap dark and light; default keeps the model's colours.
            trim: cut empty columns around each glyph so letters sit close.

        Returns:
            A :class:`~ganport.runtime.words.WordPlan` (``.z``, ``.labels``, ``.compose(images)``).

        Example:
            >>> plan = gen.plan_word("Hello", seed=1)                             # doctest: +SKIP
            >>> image = plan.compose(to_uint8(gen.run(plan.z, plan.labels)))     # doctest: +SKIP
        """
        info = self.info
        if not info.conditional:
            raise InvalidInputError(f"model {info.name!r} (kind {info.kind}) is unconditional: render_word "
                                    f"needs a character-conditioned model (glyphs, EMNIST, digits)")
        c, h, w = info.image_shape
        return words.plan_text(text, self._charmap, model_name=info.name, glyph_shape=(h, w, c),
                               latents=lambda count: self.sample_latents(count, seed), noise=noise,
                               spacing=spacing, height=height, invert=invert, trim=trim)

    def render_word(self, text: str, seed: int | None = None, noise: str = "per-glyph",
                    spacing: int | None = None, height: int | None = None, invert: bool = False,
                    trim: bool = True) -> np.ndarray:
        """Write ``text`` with the model's glyphs: all glyphs in one batch, laid out in one image.

        Args: as :meth:`plan_word`.

        Returns:
            uint8 ``[H, W, C]``.

        Raises:
            InvalidInputError: a character the model cannot draw (named, with what can be drawn),
                an unconditional model, or a bad option.

        Example:
            >>> save_png("word.png", gen.render_word("Hello 2026", seed=1))   # doctest: +SKIP
        """
        plan = self.plan_word(text, seed=seed, noise=noise, spacing=spacing, height=height,
                              invert=invert, trim=trim)
        return plan.compose(self._pixels(self.run(plan.z, plan.labels)))

    def renderable_characters(self) -> list[str]:
        """The characters :meth:`render_word` can draw (besides space and newline), sorted."""
        return sorted(self._charmap)
