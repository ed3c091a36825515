"""Built-in models: trained model packages shipped inside ganport (package data), usable right
after ``pip install 'ganport[cpu]'`` with no training and no download.

:data:`BUILTINS` is the one table of them: ``Generator.load("builtin:NAME")``, ``ganport render``
(no package argument), ``ganport generate --builtin NAME``, ``ganport serve --builtin`` and the
tests read it. Each package's ``manifest.json`` records its provenance (training command, steps,
source checkpoint SHA-256, evaluation figures), and it is loaded and checked like any package.

This module is torch-free and numpy-free.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ganport.errors import ModelNotFoundError, PackageError

__all__ = ["BuiltinModel", "BUILTINS", "BUILTIN_PREFIX", "BUILTIN_DIR", "DEFAULT_BUILTIN", "builtin_path",
           "resolve_model_path"]

#: What a model path starts with to name a built-in model: ``builtin:glyphs``.
BUILTIN_PREFIX = "builtin:"
#: The folder of the built-in packages (one sub-folder each), inside the installed ganport.
BUILTIN_DIR = Path(__file__).resolve().parent / "builtin"


@dataclass(frozen=True)
class BuiltinModel:
    """One built-in model.

    Args:
        name: its name (``builtin:NAME``; the name the server serves it under).
        description: one line for help texts.
    """

    name: str
    description: str

    @property
    def path(self) -> Path:
        """Its package directory."""
        return BUILTIN_DIR / self.name


BUILTINS: dict[str, BuiltinModel] = {model.name: model for model in (
    BuiltinModel("glyphs", "cGAN drawing the 62 characters 0-9 A-Z a-z, 28x28 grey (trained by "
                           "`ganport train cgan --dataset glyphs --epochs 60`)"),
)}
#: The model ``ganport render`` uses when no package is given.
DEFAULT_BUILTIN = "glyphs"


def builtin_path(name: str) -> Path:
    """The package directory of built-in model ``name``.

    Raises:
        ModelNotFoundError: no built-in model of that name (the message lists them).
        PackageError: the model is known but its files are missing from this install.
    """
    model = BUILTINS.get(name)
    if model is None:
        raise ModelNotFoundError(f"no built-in model {name!r}",
                                 hint=f"built-in models: {', '.join(BUILTINS)}")
    if not (model.path / "manifest.json").is_file():
        raise PackageError(f"built-in model {name!r} is missing from this install ({model.path})",
                           hint="reinstall ganport: pip install --force-reinstall 'ganport[cpu]'")
    return model.path


def resolve_model_path(path: str | os.PathLike) -> Path:
    """``builtin:NAME`` -> the built-in package's directory; any other path as a :class:`Path`.

    Example:
        >>> resolve_model_path("models/glyphs")
        PosixPath('models/glyphs')
    """
    text = os.fspath(path)
    if isinstance(text, str) and text.startswith(BUILTIN_PREFIX):
        return builtin_path(text[len(BUILTIN_PREFIX):])
    return Path(text)
