"""Model versions: the repository layout and the version policy (which versions are served).

Layout (Triton's, next to ganport's flat one), under the served directory ``DIR``:

* ``DIR/NAME/manifest.json`` ...: ``NAME`` is one package, served as version ``"1"``;
* ``DIR/NAME/1/``, ``DIR/NAME/2/`` ...: each version folder (a positive integer without leading
  zeros) is a complete ganport package; other entries of ``DIR/NAME`` are ignored, except
  ``DIR/NAME/config.pbtxt``, whose ``version_policy`` (Triton's text format) is read;
* ``DIR`` itself a package: one model named after the folder, version ``"1"``;
* ``DIR`` itself a model folder (only version folders ``1/``, ``2/`` ... hold packages): one
  model named after the folder, its ``config.pbtxt`` in ``DIR``.

A single model (the last two cases) may be served under another name (``--model-name``; KServe
mounts the model at ``/mnt/models`` and calls it by the InferenceService's name).

Policy (:data:`POLICIES`): ``latest:N`` (the N highest versions; ``latest:1`` is the default, as
in Triton), ``all``, or ``specific:V1,V2,...``. A model's ``config.pbtxt`` ``version_policy``
wins over the server's ``--version-policy``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional

from ganport.errors import InvalidInputError
from ganport.runtime.manifest import MANIFEST_NAME

logger = logging.getLogger(__name__)

#: Version of a package that is not in a version folder.
FLAT_VERSION = "1"
#: Per-model Triton configuration file whose ``version_policy`` is read.
CONFIG_NAME = "config.pbtxt"
#: Version policy kinds and what they serve (the ``--version-policy`` forms).
POLICIES = {
    "latest": "latest:N, the N highest versions (default latest:1)",
    "all": "all, every version",
    "specific": "specific:V1,V2,..., the listed versions",
}


def is_version(name: str) -> bool:
    """Whether ``name`` is a version folder name: a positive integer without leading zeros."""
    return name.isascii() and name.isdigit() and name[0] != "0" and len(name) <= 18


def version_key(version: str) -> int:
    """Sort key of a version string (versions compare as integers)."""
    return int(version)


@dataclass(frozen=True)
class VersionPolicy:
    """Which of a model's versions are served.

    Args:
        kind: ``latest``, ``all`` or ``specific`` (:data:`POLICIES`).
        count: ``latest``: how many of the highest versions (>= 1).
        versions: ``specific``: the versions, as integers.
    """

    kind: str = "latest"
    count: int = 1
    versions: tuple[int, ...] = ()

    def select(self, available: Iterable[str]) -> list[str]:
        """The versions of ``available`` this policy serves, in increasing order."""
        ordered = sorted(set(available), key=version_key)
        if self.kind == "all":
            return ordered
        if self.kind == "specific":
            return [v for v in ordered if int(v) in self.versions]
        return ordered[-self.count:]

    def __str__(self) -> str:
        if self.kind == "latest":
            return f"latest:{self.count}"
        if self.kind == "specific":
            return "specific:" + ",".join(str(v) for v in self.versions)
        return self.kind

    def to_config(self) -> dict:
        """Triton's ``ModelVersionPolicy`` in JSON form (proto field names)."""
        if self.kind == "latest":
            return {"latest": {"num_versions": self.count}}
        if self.kind == "specific":
            return {"specific": {"versions": [str(v) for v in self.versions]}}
        return {"all": {}}


DEFAULT_POLICY = VersionPolicy()


def parse_policy(text: str) -> VersionPolicy:
    """A policy from its ``--version-policy`` form: ``latest:N``, ``all`` or ``specific:V1,V2``.

    Raises:
        InvalidInputError: naming the valid forms.
    """
    kind, _, arguments = str(text).strip().partition(":")
    valid = "; ".join(POLICIES.values())
    try:
        if kind == "all" and not arguments:
            return VersionPolicy("all")
        if kind == "latest":
            count = int(arguments) if arguments else 1
            if count >= 1:
                return VersionPolicy("latest", count=count)
        if kind == "specific":
            versions = tuple(sorted({int(v) for v in arguments.split(",")}))
            if versions and all(v >= 1 for v in versions):
                return VersionPolicy("specific", versions=versions)
    except ValueError:
        pass
    raise InvalidInputError(f"invalid version policy {str(text)[:80]!r}: valid forms are {valid}")


def policy_from_config(path: Path) -> Optional[VersionPolicy]:
    """The ``version_policy`` of a Triton ``config.pbtxt``, or None when it sets none.

    Other fields are ignored (unknown ones too), so a full Triton configuration works.

    Raises:
        InvalidInputError: the file cannot be read or parsed, or its policy is invalid.
    """
    from google.protobuf import text_format

    from ganport.runtime.server.kserve import messages  # the private pool's ModelConfig

    try:
        text = path.read_text(encoding="utf-8")
        config = text_format.Parse(text, messages.ModelConfig(), allow_unknown_field=True)
    except (OSError, UnicodeDecodeError, text_format.ParseError) as exc:
        raise InvalidInputError(f"cannot read the version policy in {path.name}: {exc}") from exc
    if not config.HasField("version_policy"):
        return None
    policy = config.version_policy
    choice = policy.WhichOneof("policy_choice")
    if choice == "all":
        return VersionPolicy("all")
    if choice == "specific":
        versions = tuple(sorted(set(policy.specific.versions)))
        if not versions or min(versions) < 1:
            raise InvalidInputError(f"{path.name}: version_policy specific needs versions >= 1, got {list(versions)}")
        return VersionPolicy("specific", versions=versions)
    if choice == "latest":
        if policy.latest.num_versions < 1:
            raise InvalidInputError(f"{path.name}: version_policy latest needs num_versions >= 1")
        return VersionPolicy("latest", count=int(policy.latest.num_versions))
    return None


def model_versions(folder: Path) -> dict[str, Path]:
    """``{version: package directory}`` of one model folder, in increasing version order.

    A folder that is itself a package is version ``"1"``; otherwise each version subfolder
    holding a manifest is one version. Empty when the folder holds neither.
    """
    if (folder / MANIFEST_NAME).is_file():
        return {FLAT_VERSION: folder}
    try:
        children = [child for child in folder.iterdir() if is_version(child.name)]
    except OSError:
        return {}
    found = [child for child in children if child.is_dir() and (child / MANIFEST_NAME).is_file()]
    return {child.name: child for child in sorted(found, key=lambda c: version_key(c.name))}


def is_single_model(directory: Path) -> bool:
    """Whether ``directory`` is one model: a package, or a model folder whose only packages are
    in version folders (a folder of model folders is a repository)."""
    directory = Path(directory)
    if (directory / MANIFEST_NAME).is_file():
        return True
    if not model_versions(directory):
        return False
    try:
        others = [c for c in directory.iterdir() if c.is_dir() and not is_version(c.name) and not c.name.startswith(".")]
    except OSError:
        return False
    return not any(model_versions(child) for child in others)


def config_path(directory: Path, name: str) -> Optional[Path]:
    """Where model ``name``'s ``config.pbtxt`` lives in the served ``directory`` (None when the
    directory is one package: a package has no version policy)."""
    directory = Path(directory)
    if (directory / MANIFEST_NAME).is_file():
        return None
    if is_single_model(directory):
        return directory / CONFIG_NAME
    return directory / name / CONFIG_NAME


def scan(directory: Path, model_name: Optional[str] = None) -> dict[str, dict[str, Path]]:
    """``{name: {version: package directory}}`` of a served directory, sorted by name.

    ``directory`` is one package or one model folder (one model, named ``model_name`` or after
    the folder), or a folder of model folders.

    Raises:
        InvalidInputError: ``model_name`` is given but ``directory`` holds several models.
    """
    directory = Path(directory)
    if not directory.is_dir():
        return {}
    if is_single_model(directory):
        return {model_name or directory.resolve().name: model_versions(directory)}
    models = {}
    for child in sorted(directory.iterdir()):
        if child.is_dir() and not child.name.startswith("."):
            versions = model_versions(child)
            if versions:
                models[child.name] = versions
    if model_name is not None and models:
        raise InvalidInputError(
            f"a model name ({model_name!r}) can only be given when the served directory is one model; "
            f"{directory} holds {len(models)}: {', '.join(sorted(models)[:10])}",
            hint="serve the model's own folder, or drop the model name")
    return models
