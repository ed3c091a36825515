#!/usr/bin/env python3
"""A static server for the browser example, on loopback, standard library only.

    python3 examples/browser/serve.py --pkg PATH/TO/PACKAGE [--data DIR] [--port 8000]

serves ``/`` from this folder (index.html, main.js, node_modules/onnxruntime-web/dist/*.wasm),
``/pkg/`` from the model package and ``/data/`` from an optional folder (latents files). Open
``http://127.0.0.1:PORT/`` (random latents) or ``...?latents=data/latents.json``. The page runs
onnxruntime-web with one thread, so no cross-origin isolation headers are needed. The tests import
:func:`make_server` and use port 0 (a free port).
"""

from __future__ import annotations

import argparse
import functools
import http.server
import posixpath
import urllib.parse
from pathlib import Path

HERE = Path(__file__).resolve().parent
TYPES = {".mjs": "text/javascript", ".js": "text/javascript", ".wasm": "application/wasm",
         ".json": "application/json", ".onnx": "application/octet-stream", ".html": "text/html"}


class Handler(http.server.SimpleHTTPRequestHandler):
    """Maps URL prefixes to folders; nothing outside them is served."""

    extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map, **TYPES}

    def __init__(self, *args, mounts: dict[str, Path], **kwargs):
        self.mounts = mounts
        super().__init__(*args, directory=str(HERE), **kwargs)

    def translate_path(self, path: str) -> str:
        path = posixpath.normpath(urllib.parse.unquote(urllib.parse.urlsplit(path).path))
        for prefix, root in sorted(self.mounts.items(), key=lambda item: -len(item[0])):
            if path == prefix.rstrip("/") or path.startswith(prefix):
                rel = path[len(prefix):].lstrip("/")
                parts = [p for p in rel.split("/") if p not in ("", ".", "..")]
                return str(root.joinpath(*parts))
        return str(HERE / "__not_found__")

    def end_headers(self) -> None:
        self.send_header("Cache-Control", "no-store")
        super().end_headers()

    def log_message(self, format: str, *args) -> None:  # quiet: the tests read stdout
        pass


def make_server(pkg: str | Path, data: str | Path | None = None, host: str = "127.0.0.1",
                port: int = 0) -> http.server.ThreadingHTTPServer:
    """A server (not started) for this folder at ``/``, ``pkg`` at ``/pkg/``, ``data`` at ``/data/``."""
    mounts = {"/": HERE, "/pkg/": Path(pkg).resolve()}
    if data is not None:
        mounts["/data/"] = Path(data).resolve()
    return http.server.ThreadingHTTPServer((host, port), functools.partial(Handler, mounts=mounts))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pkg", required=True, help="model package directory (manifest.json, model.onnx)")
    parser.add_argument("--data", help="folder served at /data/ (e.g. latents.json)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    if not (HERE / "node_modules" / "onnxruntime-web").is_dir():
        parser.error(f"run `npm install --ignore-scripts` in {HERE} first (or `make examples`)")
    server = make_server(args.pkg, args.data, args.host, args.port)
    print(f"serving on http://{args.host}:{server.server_address[1]}/", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
