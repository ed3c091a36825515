"""``ganport serve`` and ``ganport client``: the gRPC server and a thin client on the command line.

Heavy modules (grpc stubs, onnxruntime) are imported inside the handlers, so ``ganport --help``
stays fast and torch is never imported.

Examples:
    ganport serve packages/ --port 50051 --max-batch 64 --metrics-port 9100
    ganport serve packages/ --http-port 8000        # + KServe v2 REST, PNG endpoints, web page
    ganport client --target 127.0.0.1:50051 generate glyphs -n 16 --seed 3 --label A -o grid.png
    ganport client render glyphs "HELLO" -o word.png
    ganport client decode glyphs --latents z.npy -o out.png
    ganport client models
    ganport client health
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import threading

from ganport.errors import GanportError, InvalidInputError

logger = logging.getLogger(__name__)

DEFAULT_TARGET = "127.0.0.1:50051"


class RemoteError(GanportError):
    """A call to the server failed; the message starts with the gRPC status code name."""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``serve``, ``client`` and ``models`` sub-commands."""
    _register_serve(subparsers)
    _register_client(subparsers)
    _register_models(subparsers)


# ---------------------------------------------------------------------------------------- serve

def _register_serve(subparsers) -> None:
    p = subparsers.add_parser(
        "serve", help="serve model packages over gRPC and HTTP (batched generation, KServe v2, health)",
        description="Serve every model in MODELS_DIR under its directory name: a subdirectory with a "
                    "manifest.json is one package (version 1); one with version folders 1/, 2/ ... (Triton's "
                    "layout, each a package) serves the versions its version policy selects. MODELS_DIR may "
                    "also be one package or one model folder, served under --model-name or its own name. Prints "
                    "'serving N model(s) on HOST:PORT' when ready (after 'http on http://HOST:PORT' when HTTP "
                    "is on); SIGTERM/SIGINT drain and exit 0.")
    p.add_argument("models_dir", metavar="MODELS_DIR", nargs="?", default=None,
                   help="folder of model packages, or one package (or --builtin)")
    from ganport.runtime.builtins import BUILTINS

    p.add_argument("--builtin", action="store_true",
                   help="serve the models shipped with ganport instead of MODELS_DIR: " + ", ".join(BUILTINS))
    p.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1; 0.0.0.0 for all)")
    p.add_argument("--port", type=int, default=50051, help="gRPC port (default 50051; 0 picks a free one)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    from ganport.runtime.backends import BACKENDS

    p.add_argument("--backend", choices=tuple(BACKENDS), default="onnx",
                   help="artifact to run (default onnx; torchscript/pt2 need torch)")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU inference threads per model (default: the CPU cores divided among the models)")
    p.add_argument("--max-batch", type=int, default=64, help="most images per model call (default 64)")
    from ganport.runtime.server.instances import AUTO_INSTANCES

    p.add_argument("--instances", type=_instances, default=AUTO_INSTANCES, metavar="{auto,N}",
                   help="model calls per model that may run at once, each in its own thread (Triton's "
                        "instance count). auto (default): 2 for convolutional models on a CPU with 2+ "
                        "cores (more images/s under many clients; a batch is split across idle "
                        "instances), 1 otherwise. With --threads unset the cores are shared among them")
    p.add_argument("--max-delay-ms", type=float, default=0.0,
                   help="how long the oldest queued request may wait for its batch to fill (default 0: "
                        "run whatever is queued as soon as the model is free; under load batches grow "
                        "while the model computes)")
    p.add_argument("--max-queue", type=int, default=1024,
                   help="most waiting requests per model before RESOURCE_EXHAUSTED (default 1024)")
    p.add_argument("--max-message-mb", type=float, default=64, help="gRPC message size limit in MiB (default 64)")
    p.add_argument("--max-count", type=int, default=1024, help="most images per Generate call (default 1024)")
    p.add_argument("--max-stream-count", type=int, default=65536,
                   help="most images per GenerateStream call (default 65536)")
    p.add_argument("--max-text-length", type=int, default=64, help="most characters per RenderWord (default 64)")
    p.add_argument("--workers", type=int, default=4,
                   help="threads for work kept off the event loop besides model calls (Encode, "
                        "encoding big responses; default 4)")
    p.add_argument("--tls-cert", help="PEM certificate chain: serve TLS (with --tls-key)")
    p.add_argument("--tls-key", help="PEM private key for --tls-cert")
    p.add_argument("--token", default=None,
                   help="require 'authorization: Bearer TOKEN' (default: $GANPORT_TOKEN if set)")
    p.add_argument("--metrics-port", type=int, default=None, help="serve Prometheus metrics on this HTTP port")
    p.add_argument("--metrics-host", default="127.0.0.1", help="interface for the metrics port")
    p.add_argument("--grace", type=float, default=10.0, help="seconds in-flight calls get at shutdown (default 10)")
    p.add_argument("--drain-seconds", type=float, default=0.0,
                   help="keep serving this long with health NOT_SERVING before refusing calls (default 0)")
    p.add_argument("--http-port", type=int, default=None,
                   help="also serve HTTP on this port: KServe v2 REST (tritonclient.http, curl), PNG "
                        "endpoints and a web page at / (default: off; 0 picks a free one; Triton uses 8000)")
    p.add_argument("--http-host", default=None, help="interface for the HTTP port (default: --host)")
    p.add_argument("--no-kserve", dest="kserve", action="store_false", help="do not serve the KServe v2 API")
    from ganport.runtime.server.modes import DEFAULT_MODEL_CONTROL, MODEL_CONTROL

    p.add_argument("--model-control", choices=tuple(MODEL_CONTROL), default=DEFAULT_MODEL_CONTROL,
                   help="what may change the served models: " + "; ".join(f"{k}: {v}" for k, v in MODEL_CONTROL.items()))
    p.add_argument("--exit-on-error", action=argparse.BooleanOptionalAction, default=True,
                   help="stop with an error when a package fails to load at start-up (default, as Triton's "
                        "--exit-on-error); --no-exit-on-error serves the models that load and lists the others "
                        "as UNAVAILABLE with the reason (`ganport models list`); --model-control poll retries "
                        "one when its files change")
    p.add_argument("--cache-mb", type=float, default=0.0,
                   help="MiB of answers to deterministic requests (seeded Generate and RenderWord, Decode) kept "
                        "in an LRU cache, dropped when their model reloads (default 0: off)")
    from ganport.runtime.server.versions import DEFAULT_POLICY, POLICIES, parse_policy

    p.add_argument("--version-policy", type=_policy_type(parse_policy), default=DEFAULT_POLICY, metavar="POLICY",
                   help="which versions of a model in version folders (MODELS_DIR/NAME/1/, 2/ ...) are served "
                        "unless its MODELS_DIR/NAME/config.pbtxt sets a version_policy: "
                        + "; ".join(POLICIES.values()))
    p.add_argument("--poll-seconds", type=float, default=2.0,
                   help="seconds between two scans of MODELS_DIR with --model-control poll (default 2)")
    p.add_argument("--model-name", default=None, metavar="NAME",
                   help="serve MODELS_DIR under this name when it is one model (a package, or a folder of "
                        "version folders 1/, 2/ ...; default: its folder name), e.g. KServe's "
                        "InferenceService name for /mnt/models")
    p.set_defaults(handler=_serve)


def _instances(text: str):
    """``--instances``: ``auto`` or a count >= 1 (argparse reports anything else as ``error: ...``)."""
    from ganport.runtime.server.instances import check_instances

    try:
        return check_instances(text)
    except InvalidInputError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _policy_type(parse):
    """An argparse type that reports a bad policy as ``error: ...`` (exit 2) with the valid forms."""
    def convert(text: str):
        try:
            return parse(text)
        except InvalidInputError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from exc

    convert.__name__ = "version policy"
    return convert


def _format_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _models_dir(models_dir: str | None, builtin: bool) -> str:
    """MODELS_DIR, or the folder of the built-in packages with ``--builtin`` (exactly one of them)."""
    from ganport.runtime.builtins import BUILTIN_DIR, BUILTINS, builtin_path

    if builtin and models_dir is not None:
        raise InvalidInputError(f"give MODELS_DIR or --builtin, not both (got {models_dir!r} and --builtin)")
    if builtin:
        for name in BUILTINS:
            builtin_path(name)  # a built-in missing from this install is named here, not as "no models"
        return str(BUILTIN_DIR)
    if models_dir is None:
        raise InvalidInputError("no models to serve: give MODELS_DIR (a folder of packages, or one package)",
                                hint="or --builtin to serve the models shipped with ganport")
    return models_dir


def _serve(args: argparse.Namespace) -> int:
    import signal

    from ganport.runtime.server.server import create_server

    if bool(args.tls_cert) != bool(args.tls_key):
        raise InvalidInputError("--tls-cert and --tls-key go together")
    # A long-running server's model changes (load, reload, unload, each with its warm-up time)
    # belong in its log even without -v.
    repository_log = logging.getLogger("ganport.runtime.server.repository")
    if repository_log.getEffectiveLevel() > logging.INFO:
        repository_log.setLevel(logging.INFO)
    token = args.token if args.token is not None else os.environ.get("GANPORT_TOKEN") or None
    server, port = create_server(
        _format_address(args.host, args.port), _models_dir(args.models_dir, args.builtin), backend=args.backend, device=args.device,
        threads=args.threads, max_batch=args.max_batch, max_delay_ms=args.max_delay_ms,
        max_queue=args.max_queue, max_message_mb=args.max_message_mb, max_count=args.max_count,
        max_stream_count=args.max_stream_count, max_text_length=args.max_text_length,
        token=token, tls=(args.tls_cert, args.tls_key) if args.tls_cert else None,
        metrics_port=args.metrics_port, metrics_host=args.metrics_host, workers=args.workers,
        kserve=args.kserve, model_control=args.model_control, poll_seconds=args.poll_seconds,
        cache_mb=args.cache_mb, http_port=args.http_port, http_host=args.http_host,
        version_policy=args.version_policy, model_name=args.model_name, instances=args.instances,
        exit_on_error=args.exit_on_error)

    stop = threading.Event()

    def request_stop(signum, _frame) -> None:
        logger.info("received %s, shutting down", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    server.start()
    if server.metrics_port is not None:
        print(f"metrics on http://{_format_address(args.metrics_host, server.metrics_port)}/metrics", flush=True)
    if server.http_url is not None:
        print(f"http on {server.http_url}", flush=True)
    # The readiness line scripts wait for (keep its format).
    print(f"serving {len(server.models)} model(s) on {_format_address(args.host, port)}", flush=True)
    # Wait in short slices so the signal handler runs promptly in the main thread.
    while not stop.wait(0.5):
        pass
    server.stop(grace=args.grace, drain=args.drain_seconds)
    print("server stopped", flush=True)
    return 0


# --------------------------------------------------------------------------------------- client

def _register_client(subparsers) -> None:
    p = subparsers.add_parser("client", help="call a ganport server (generate, render, decode, models, health)",
                              description="A thin client over the ganport.v1 gRPC API.")
    _add_connection_options(p)
    p.set_defaults(handler=lambda args: p.print_help() or 2)
    commands = p.add_subparsers(dest="client_command", metavar="CLIENT_COMMAND")

    g = commands.add_parser("generate", help="generate images and write them as one PNG grid")
    g.add_argument("model")
    g.add_argument("-n", "--count", type=int, default=16, help="number of images (default 16)")
    g.add_argument("--seed", type=int, default=None, help="seed (default: the server picks and prints it)")
    g.add_argument("--label", action="append", default=None,
                   help="class index or name; once for all images or once per image")
    g.add_argument("--nrow", type=int, default=None, help="images per grid row (default: square)")
    g.add_argument("-o", "--out", required=True, help="output PNG")
    _add_version_option(g)
    g.set_defaults(handler=_client_generate)

    r = commands.add_parser("render", help="render a word with a character model")
    r.add_argument("model")
    r.add_argument("text")
    r.add_argument("--seed", type=int, default=None)
    r.add_argument("--noise", choices=("per-glyph", "shared"), default="per-glyph")
    r.add_argument("--spacing", type=int, default=None, help="pixels between glyphs")
    r.add_argument("--height", type=int, default=None, help="glyph height in pixels")
    r.add_argument("-o", "--out", required=True, help="output PNG")
    _add_version_option(r)
    r.set_defaults(handler=_client_render)

    d = commands.add_parser("decode", help="decode latent vectors from a .npy file into a PNG grid")
    d.add_argument("model")
    d.add_argument("--latents", required=True, help=".npy file with float [N, latent_dim]")
    d.add_argument("--label", action="append", default=None, help="class index or name (once, or once per row)")
    d.add_argument("--nrow", type=int, default=None)
    d.add_argument("-o", "--out", required=True, help="output PNG")
    _add_version_option(d)
    d.set_defaults(handler=_client_decode)

    e = commands.add_parser("encode", help="encode PNG images to latents (AAE models) into a .npy file")
    e.add_argument("model")
    e.add_argument("images", nargs="+", help="PNG files of the model's image size")
    e.add_argument("-o", "--out", required=True, help="output .npy")
    _add_version_option(e)
    e.set_defaults(handler=_client_encode)

    m = commands.add_parser("models", help="list the served models")
    m.add_argument("--json", action="store_true", help="print JSON instead of a table")
    m.set_defaults(handler=_client_models)

    h = commands.add_parser("health", help="print the health status (exit 0 only when SERVING)")
    h.add_argument("--service", default="", help="service name (default: the whole server)")
    h.set_defaults(handler=_client_health)


def _add_version_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model-version", default="", metavar="VERSION",
                   help="model version to call (default: the model's highest served version)")


def _add_connection_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--target", default=DEFAULT_TARGET, help=f"server host:port (default {DEFAULT_TARGET})")
    p.add_argument("--token", default=None, help="bearer token (default: $GANPORT_TOKEN if set)")
    p.add_argument("--tls-ca", default=None, help="PEM CA certificate to trust: connect with TLS")
    p.add_argument("--tls", action="store_true", help="connect with TLS using the system's trusted roots")
    p.add_argument("--timeout", type=float, default=60.0, help="deadline per call in seconds (default 60)")
    p.add_argument("--max-message-mb", type=float, default=64, help="message size limit in MiB (default 64)")


# --------------------------------------------------------------------------------------- models

def _register_models(subparsers) -> None:
    p = subparsers.add_parser("models", help="list, load, unload or reload the models of a running server",
                              description="Model control of a running `ganport serve` (its --model-control must "
                                          "be explicit or poll for load/unload/reload).")
    _add_connection_options(p)
    p.set_defaults(handler=lambda args: p.print_help() or 2)
    commands = p.add_subparsers(dest="models_command", metavar="MODELS_COMMAND")
    ls = commands.add_parser("list", help="every model of the server's models directory: one line per version "
                                          "(NAME, VERSION, STATE, reason)")
    ls.add_argument("--json", action="store_true", help="print JSON instead of a table")
    ls.set_defaults(handler=_models_list)
    for verb, text in (("load", "load a model of the models directory: the versions its version policy selects"),
                       ("reload", "reload a model's versions (each old one serves until its new one is ready)"),
                       ("unload", "stop serving every version of a model after its queued work has run")):
        c = commands.add_parser(verb, help=text)
        c.add_argument("model", help="model (package directory) name")
        c.set_defaults(handler=_models_change, verb=verb)


def _models_list(args: argparse.Namespace) -> int:
    with _connect(args) as client:
        index = _remote(client.repository_index)
    if args.json:
        print(json.dumps(index, indent=2))
        return 0
    for entry in index:
        print(f"{entry['name']}\t{entry['version']}\t{entry['state']}\t{entry['reason']}".rstrip())
    return 0


def _models_change(args: argparse.Namespace) -> int:
    with _connect(args) as client:
        if args.verb == "unload":
            _remote(lambda: client.unload_model(args.model))
            print(f"unloaded {args.model}")
            return 0
        _remote(lambda: client.load_model(args.model))
        index = _remote(client.repository_index)
    served = [e["version"] for e in index if e["name"] == args.model and e["state"] == "READY"]
    print(f"{args.verb}ed {args.model} (serving version{'s' if len(served) != 1 else ''} {', '.join(served)})")
    return 0


def _connect(args: argparse.Namespace):
    from ganport.runtime.server.client import GanportClient

    token = args.token if args.token is not None else os.environ.get("GANPORT_TOKEN") or None
    return GanportClient(args.target, token=token, tls_ca=args.tls_ca, tls=args.tls, timeout=args.timeout,
                         max_message_mb=args.max_message_mb)


def _remote(call):
    """Run ``call()``; turn a gRPC failure into one ``error: CODE: message`` line (exit 2)."""
    import grpc

    try:
        return call()
    except grpc.RpcError as exc:
        code = exc.code().name if exc.code() is not None else "UNKNOWN"
        raise RemoteError(f"{code}: {exc.details()}") from exc


def _labels(values):
    """CLI label strings: decimal strings stay names the server resolves (indices or names)."""
    if not values:
        return None
    return values[0] if len(values) == 1 else values


def _write_grid(path: str, images, nrow) -> None:
    from ganport.runtime.images import make_grid, save_png

    save_png(path, images[0] if len(images) == 1 else make_grid(images, nrow=nrow))


def _client_generate(args: argparse.Namespace) -> int:
    with _connect(args) as client:
        reply = _remote(lambda: client.generate_response(args.model, args.count, seed=args.seed,
                                                         labels=_labels(args.label), version=args.model_version))
    from ganport.runtime.server.codec import batch_to_array

    _write_grid(args.out, batch_to_array(reply.images), args.nrow)
    print(f"wrote {args.out}: {args.count} image(s) from {reply.model} version {reply.version}, seed {reply.seed}")
    return 0


def _client_render(args: argparse.Namespace) -> int:
    from ganport.runtime.images import save_png

    with _connect(args) as client:
        word = _remote(lambda: client.render_word(args.model, args.text, seed=args.seed, noise=args.noise,
                                                  spacing=args.spacing, height=args.height,
                                                  version=args.model_version))
    save_png(args.out, word)
    print(f"wrote {args.out}: {word.shape[1]}x{word.shape[0]}")
    return 0


def _client_decode(args: argparse.Namespace) -> int:
    import numpy as np

    try:
        latents = np.load(args.latents, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise InvalidInputError(f"cannot read latents from {args.latents}: {exc}") from exc
    if latents.ndim == 1:
        latents = latents[None]
    with _connect(args) as client:
        images = _remote(lambda: client.decode(args.model, latents, labels=_labels(args.label),
                                                    version=args.model_version))
    _write_grid(args.out, images, args.nrow)
    print(f"wrote {args.out}: {len(images)} image(s)")
    return 0


def _client_encode(args: argparse.Namespace) -> int:
    import numpy as np

    from ganport.runtime.images import decode_png

    images = []
    for path in args.images:
        try:
            data = open(path, "rb").read()
        except OSError as exc:
            raise InvalidInputError(f"cannot read {path}: {exc.strerror or exc}") from exc
        images.append(decode_png(data))
    if len({im.shape for im in images}) != 1:
        raise InvalidInputError("all images must have the same size")
    with _connect(args) as client:
        latents = _remote(lambda: client.encode(args.model, np.stack(images), version=args.model_version))
    np.save(args.out, latents)
    print(f"wrote {args.out}: latents {list(latents.shape)}")
    return 0


def _client_models(args: argparse.Namespace) -> int:
    with _connect(args) as client:
        models = _remote(client.list_models)
    if args.json:
        from google.protobuf.json_format import MessageToDict

        print(json.dumps([MessageToDict(m, preserving_proto_field_name=True) for m in models], indent=2))
        return 0
    for m in models:
        classes = f"{m.n_classes} classes" if m.conditional else "unconditional"
        versions = ",".join(v.version for v in m.versions if v.state == "READY") or m.version
        print(f"{m.name}\t{m.kind}\tz={m.latent_dim}\timage={list(m.image_shape)}\t{classes}\t"
              f"{m.backend}/{m.device}\tversions={versions}")
    return 0


def _client_health(args: argparse.Namespace) -> int:
    with _connect(args) as client:
        status = _remote(lambda: client.health(args.service))
    print(status)
    return 0 if status == "SERVING" else 1


if __name__ == "__main__":  # pragma: no cover
    from ganport.cli import main

    sys.exit(main(["client", *sys.argv[1:]]))
