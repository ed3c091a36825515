"""Handle torch's exporter warnings, log chatter and prints instead of dumping them on the user.

``torch.jit`` emits DeprecationWarnings (pointing at ``torch.export``), the dynamo ONNX exporter
a FutureWarning from inside torch and log lines about optional packages (torchvision), the legacy
ONNX exporter prints the whole TorchScript IR graph to stdout when an operator is unsupported, and
``torch.export.load`` logs a traceback before it raises. They say nothing actionable to a ganport
user, would come before ganport's one ``error:`` line, and a pytest run with ``-W error`` would
turn the warnings into failures. Inside :func:`handled_warnings` all of it is captured (Python and
C-level stdout/stderr too, see :mod:`ganport.quiet`) and logged at DEBUG (``-vv`` shows it);
nothing is suppressed outside the block.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Iterator

from ganport.quiet import Captured, captured_output

logger = logging.getLogger(__name__)

# torch loggers that print informational warnings during export (e.g. "torchvision is not installed").
_CHATTY_LOGGERS = ("torch.onnx", "torch.export", "torch._export", "torch.fx.experimental.symbolic_shapes",
                   "onnxscript", "onnx_ir")


@contextlib.contextmanager
def handled_warnings(what: str) -> Iterator[Captured]:
    """Capture warnings, prints and torch's export loggers for the duration of the block.

    Args:
        what: what is being done, for the DEBUG log lines.

    Yields:
        The :class:`~ganport.quiet.Captured` output (filled in when the block ends).

    Example:
        >>> import warnings
        >>> with handled_warnings("tracing"):
        ...     warnings.warn("deprecated", DeprecationWarning)
    """
    with captured_output(what, loggers=_CHATTY_LOGGERS) as captured:
        yield captured
