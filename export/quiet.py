"""Handle torch's exporter warnings and log chatter instead of dumping them on the user.

``torch.jit`` emits DeprecationWarnings (pointing at ``torch.export``), the dynamo ONNX exporter
a FutureWarning from inside torch and log lines about optional packages (torchvision). They say
nothing actionable to a ganport user, and a pytest run with ``-W error`` would turn them into
failures. Inside :func:`handled_warnings` they are recorded and logged at DEBUG (``-vv`` shows
them); nothing is suppressed outside the block.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from typing import Iterator

logger = logging.getLogger(__name__)

# torch loggers that print informational warnings during export (e.g. "torchvision is not installed").
_CHATTY_LOGGERS = ("torch.onnx", "torch.export", "torch._export", "torch.fx.experimental.symbolic_shapes",
                   "onnxscript", "onnx_ir")


@contextlib.contextmanager
def handled_warnings(what: str) -> Iterator[None]:
    """Record warnings and quiet torch's export loggers for the duration of the block.

    Args:
        what: what is being done, for the DEBUG log lines.

    Example:
        >>> with handled_warnings("tracing"):
        ...     warnings.warn("deprecated", DeprecationWarning)
    """
    saved = {name: logging.getLogger(name).level for name in _CHATTY_LOGGERS}
    for name in _CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield
    finally:
        for name, level in saved.items():
            logging.getLogger(name).setLevel(level)
    seen = set()
    for item in caught:
        text = f"{item.category.__name__}: {item.message}"
        if text not in seen:
            seen.add(text)
            logger.debug("%s: %s", what, text)
