"""``--model-control`` modes: what may change the served models after start-up.

Kept apart from :mod:`.repository` (which needs grpcio) so that ``ganport``'s parser, which
lists the modes in ``ganport serve --help``, builds in an install without the server's
dependencies (``pip install 'ganport[embed]'``).
"""

from __future__ import annotations

#: ``--model-control`` modes: what may change the served models after start-up.
MODEL_CONTROL = {
    "none": "the models found at start-up, fixed: load/unload calls are refused",
    "explicit": "the models found at start-up, then load/unload/reload through the API (default)",
    "poll": "as explicit, and the directory is scanned every --poll-seconds: new packages load, "
            "changed ones reload, removed ones unload",
}
DEFAULT_MODEL_CONTROL = "explicit"
