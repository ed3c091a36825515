"""ganport: train image generators, export them, serve them.

The top-level package is torch-free. Training lives in :mod:`ganport.trainer`, export in
:mod:`ganport.export` (both need torch), the runtime and gRPC server in :mod:`ganport.runtime`.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
