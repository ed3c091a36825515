"""The Triton peer of the ``peer`` benchmark: one ganport package's ``model.onnx`` served by PyTriton.

Run in the peer environment (``build/peer-venv``, made from Debian's ``/usr/bin/python3.11`` with
``benchmarks/peer-requirements.txt``; ``make peer-venv``), never in ``.venv``: it needs only
PyTriton, onnxruntime and numpy, not ganport. It serves the very same ``model.onnx`` that ``ganport
serve`` loads, the way a Triton user would serve it with PyTriton (whose bundled tritonserver has
only the Python backend): an onnxruntime session inside the Triton Python callable, behind
Triton's dynamic batcher.

* model name: the package folder's name (as ``ganport serve`` names it);
* inputs: ``z`` FP32 ``[N, latent_dim]`` and, for conditional models, ``label`` INT64 ``[N, 1]``
  (Triton requires a per-row shape; ganport's KServe path accepts ``[N, 1]`` too); output ``image``
  FP32 ``[N, C, H, W]``;
* dynamic batching: ``max_batch_size`` 64 (``--max-batch``), ``max_queue_delay_microseconds``
  2000 (``--queue-delay-us``);
* onnxruntime: CPU, ``--threads`` intra-op threads (2, as ganport gets), one inter-op thread,
  intra-op spinning off (``session.intra_op.allow_spinning=0``, the serving setting issue 11 gives
  ganport; ``--spin`` keeps onnxruntime's default: on 2 cores the spinning threads starve
  Triton's own processes, 0.65-0.9k vs 1.1k img/s at 32 clients on the MLP), other options default;
* gRPC, HTTP and metrics on 127.0.0.1 ports given on the command line (0: a free one, picked here).

When the model is loaded it prints ``peer serving MODEL on 127.0.0.1:GRPC_PORT (http H, metrics
M)``; SIGTERM/SIGINT stop Triton and exit 0. PyTriton's Python backend leaves ``folder*``
directories in the temp folder: the benchmark starts this script with ``TMPDIR`` pointing at a
scratch folder and removes it afterwards.

Example:
    build/peer-venv/bin/python benchmarks/peer_triton.py PKG_DIR --grpc-port 0
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import socket
import sys
import threading
import time
from pathlib import Path


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (bound and released; Triton binds it a moment later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="serve a ganport package's model.onnx with PyTriton")
    parser.add_argument("package", type=Path, help="ganport model package (manifest.json + model.onnx)")
    parser.add_argument("--name", default=None, help="model name (default: the package folder's name)")
    parser.add_argument("--grpc-port", type=int, default=0, help="gRPC port (0: a free one)")
    parser.add_argument("--http-port", type=int, default=0, help="HTTP port (0: a free one)")
    parser.add_argument("--metrics-port", type=int, default=0, help="Prometheus metrics port (0: a free one)")
    parser.add_argument("--max-batch", type=int, default=64, help="max_batch_size (default 64)")
    parser.add_argument("--queue-delay-us", type=int, default=2000,
                        help="dynamic batcher max_queue_delay_microseconds (default 2000)")
    parser.add_argument("--threads", type=int, default=2, help="onnxruntime intra-op threads (default 2)")
    parser.add_argument("--instances", type=int, default=1,
                        help="model instances (Triton's instance count: one callable and one onnxruntime session "
                             "each, run at once; default 1)")
    parser.add_argument("--spin", action="store_true",
                        help="let onnxruntime's intra-op threads spin between calls (its default); without it "
                             "session.intra_op.allow_spinning=0, the serving setting issue 11 gives ganport")
    parser.add_argument("--log-verbose", type=int, default=0, help="tritonserver --log-verbose")
    return parser.parse_args(argv)


def make_session(path: Path, threads: int, spin: bool = True):
    """The onnxruntime CPU session, with the thread counts ganport's OnnxBackend uses."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    if not spin:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    import numpy as np
    from pytriton.decorators import batch
    from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
    from pytriton.triton import Triton, TritonConfig

    manifest = json.loads((args.package / "manifest.json").read_text())
    files = manifest.get("files") or {}
    onnx_path = args.package / files.get("onnx", "model.onnx")
    latent_dim = int(manifest["latent_dim"])
    image_shape = tuple(int(x) for x in manifest["image_shape"])
    conditional = bool(manifest.get("n_classes") or manifest.get("class_names"))
    name = args.name or args.package.name
    def make_infer():
        """One instance: its own onnxruntime session and callable."""
        session = make_session(onnx_path, args.threads, spin=args.spin)
        output_name = session.get_outputs()[0].name
        if conditional:
            @batch
            def infer(z, label):
                image = session.run([output_name], {"z": z.astype(np.float32, copy=False),
                                                    "label": label.reshape(-1).astype(np.int64, copy=False)})[0]
                return {"image": image}
        else:
            @batch
            def infer(z):
                return {"image": session.run([output_name], {"z": z.astype(np.float32, copy=False)})[0]}
        return infer

    if conditional:
        inputs = [Tensor(name="z", dtype=np.float32, shape=(latent_dim,)),
                  Tensor(name="label", dtype=np.int64, shape=(1,))]
    else:
        inputs = [Tensor(name="z", dtype=np.float32, shape=(latent_dim,))]
    # PyTriton makes one model instance per callable in a list.
    infer = make_infer() if args.instances == 1 else [make_infer() for _ in range(args.instances)]

    ports = {key: getattr(args, key) or free_port() for key in ("grpc_port", "http_port", "metrics_port")}
    config = TritonConfig(grpc_address="127.0.0.1", http_address="127.0.0.1", metrics_address="127.0.0.1",
                          log_verbose=args.log_verbose, **ports)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    triton = Triton(config=config)
    try:
        triton.bind(model_name=name, infer_func=infer, inputs=inputs,
                    outputs=[Tensor(name="image", dtype=np.float32, shape=image_shape)],
                    config=ModelConfig(max_batch_size=args.max_batch,
                                       batcher=DynamicBatcher(max_queue_delay_microseconds=args.queue_delay_us)),
                    strict=False)
        triton.run()  # returns when the server is up and the model is loaded
        print(f"peer serving {name} on 127.0.0.1:{ports['grpc_port']} (http {ports['http_port']}, "
              f"metrics {ports['metrics_port']})", flush=True)
        while not stop.wait(0.5):
            if not triton.is_alive():
                print("peer: tritonserver died", file=sys.stderr, flush=True)
                return 1
    finally:
        started = time.perf_counter()
        triton.stop()
        print(f"peer stopped in {time.perf_counter() - started:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
