"""``torch.export`` artifacts: ``model.pt2`` and ``encoder.pt2`` (AAE), the forward-looking format.

The program is exported with a dynamic batch ``Dim`` (a static export rejects other batch sizes)
and saved with ``torch.export.save``; the metadata goes into the same extra files as TorchScript's
(one per metadata key, plus ``ganport.json`` with the whole dict)::

    extra = {"ganport.json": ""}
    program = torch.export.load(path, extra_files=extra)
    images = program.module()(z, label)
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable, Mapping

import torch

from ganport.export.job import Artifact, ExportJob
from ganport.export.quiet import handled_warnings
from ganport.export.torchscript_export import extra_files, read_extra_files, request_extra_files

logger = logging.getLogger(__name__)


def build_program(job: ExportJob, role: str) -> torch.export.ExportedProgram:
    """Export a role's graph with ``torch.export`` (cached on the job)."""
    def export() -> torch.export.ExportedProgram:
        with handled_warnings(f"torch.export of the {role}"), torch.no_grad():
            return torch.export.export(job.graph(role), job.example(role),
                                       dynamic_shapes=job.dynamic_shapes(role))
    return job.cached(("pt2", role), export)


def save_program(program: torch.export.ExportedProgram, path: Path, metadata: Mapping[str, str]) -> None:
    """Write an exported program with the metadata as the ``ganport.json`` extra file."""
    with handled_warnings(f"saving {path.name}"):
        torch.export.save(program, str(path), extra_files=extra_files(metadata))


def load_program(path: Path) -> tuple[Callable[[list], Any], dict[str, str]]:
    """Load a ``.pt2`` file; return its runner (numpy in, numpy out) and its metadata."""
    extra = request_extra_files()
    with handled_warnings(f"loading {path.name}"):
        module = torch.export.load(str(path), extra_files=extra).module()

    def run(inputs: list) -> Any:
        with torch.no_grad():
            return module(*(torch.from_numpy(x) for x in inputs)).numpy()

    return run, read_extra_files(extra, path.name)


def write_pt2(job: ExportJob) -> list[Artifact]:
    """The ``pt2`` format: ``model.pt2`` and, for AAE, ``encoder.pt2``."""
    artifacts = []
    for role in job.roles:
        program = build_program(job, role)
        artifacts.append(Artifact(
            key=job.files_key(role, "pt2"), relpath=job.file_name(role, ".pt2"), format="pt2",
            role=role, load=load_program,
            save=lambda path, metadata, program=program: save_program(program, path, metadata)))
    return artifacts
