"""``llama-index-vlm serve``: the JSON API and the web page over an index, models loaded once.

Everything a user can get wrong (no index, a missing model directory, a busy port, a public
address without a token) is checked before any model loads. The port is bound at once, the
models then load in the background (``GET /health`` says ``loading``, then ``ready``); if they
fail to load, the server stops and the command exits with the error, as other commands do.

Only the standard library is imported here; FastAPI, uvicorn and the models load when the
command runs.
"""

from __future__ import annotations

import argparse
import errno
import ipaddress
import os
import socket
import threading
from typing import Any

from llama_index_vlm.cli.parser import (
    DEFAULT_STORE,
    DEFAULT_VLM,
    DTYPES,
    add_quantization_option,
    positive_int,
)
from llama_index_vlm.errors import UsageError

#: The environment variable holding the server's token (safer than --token, which other users
#: of the machine can see in the process list).
TOKEN_ENV = "LLAMA_INDEX_VLM_TOKEN"

_LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1", "[::1]")
#: Host headers a server on a loopback address accepts.
_LOOPBACK_HOSTS = ["localhost", "127.0.0.1", "[::1]"]


def add_serve_parser(commands: Any, common: argparse.ArgumentParser) -> None:
    """Register ``serve`` on the CLI's sub-parsers (``common``: --store and --verbose)."""
    serve = commands.add_parser(
        "serve",
        parents=[common],
        help="serve the index: a JSON API and a web page, models loaded once",
        description="Load the models once and serve the index: a JSON API (/search, /ask with "
        "streamed answers, /pages, /documents with background uploads; its schema is at "
        "/openapi.json) and a web page at / to ask questions, see the cited pages and add or "
        "delete documents. Listens on 127.0.0.1 unless --host says otherwise; any other "
        f"address needs a token ({TOKEN_ENV} or --token) or --insecure.",
    )
    _model_options(serve)
    _network_options(serve)
    _limit_options(serve)


def _model_options(serve: argparse.ArgumentParser) -> None:
    serve.add_argument(
        "--model",
        metavar="CKPT",
        help="ColPali/ColQwen2 retriever: hub id or local directory (default: the model the "
        "index was built with; vidore/colpali-v1.3-hf for an empty index)",
    )
    answering = serve.add_mutually_exclusive_group()
    answering.add_argument(
        "--vlm",
        default=DEFAULT_VLM,
        metavar="CKPT",
        help="the answering model for /ask (Qwen-VL, SmolVLM, Gemma 3, LLaVA, PaliGemma, ...): "
        f"hub id or local directory (default: {DEFAULT_VLM})",
    )
    answering.add_argument(
        "--no-vlm", action="store_true", help="load no answering model: search only"
    )
    add_quantization_option(serve)
    serve.add_argument("--device", default="auto", help="torch device (default: auto)")
    serve.add_argument(
        "--search-device",
        metavar="DEVICE",
        help="keep every page's vectors on this torch device (cuda, cuda:1) and search them "
        "there exactly; the store must fit in its memory (default: search on the CPU)",
    )
    serve.add_argument(
        "--search-processes",
        type=positive_int,
        metavar="N",
        help="run fast searches in N worker processes, so that concurrent requests use "
        "several cores; each keeps its own copy of the page codes (default: in the server's "
        "process)",
    )
    serve.add_argument(
        "--dtype",
        default="auto",
        choices=DTYPES,
        help="weights' type; auto: bfloat16 on a GPU or a CPU, float16 on mps (default: auto)",
    )
    serve.add_argument(
        "--max-new-tokens",
        type=positive_int,
        default=256,
        metavar="N",
        help="longest answer in tokens (default: 256)",
    )


def _network_options(serve: argparse.ArgumentParser) -> None:
    serve.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)"
    )
    serve.add_argument(
        "--port",
        type=_port,
        default=8000,
        help="port to listen on; 0 picks a free one (default: 8000)",
    )
    serve.add_argument(
        "--token",
        help=f"require this bearer token on every route (default: ${TOKEN_ENV}, if set)",
    )
    serve.add_argument(
        "--insecure",
        action="store_true",
        help="allow listening on a non-loopback address without a token: anyone who reaches "
        "the port can read, upload and delete documents",
    )


def _limit_options(serve: argparse.ArgumentParser) -> None:
    serve.add_argument(
        "--max-upload-mb",
        type=positive_int,
        default=64,
        metavar="MB",
        help="largest upload request, all files together (default: 64)",
    )
    serve.add_argument(
        "--max-pages",
        type=positive_int,
        default=500,
        metavar="N",
        help="most pages an uploaded file may have; longer files are refused (default: 500)",
    )
    serve.add_argument(
        "--dpi",
        type=positive_int,
        default=144,
        help="render resolution of uploaded PDFs (default: 144)",
    )
    serve.add_argument(
        "--slots",
        type=positive_int,
        default=1,
        metavar="N",
        help="answers generated at once; more askers wait in a queue (default: 1)",
    )


def run_serve(args: argparse.Namespace) -> int:
    """``serve``: check everything, bind the port, load the models, serve until Ctrl-C."""
    token = _token(args)
    _check_store(args.store)
    for option, value in (("--model", args.model), ("--vlm", None if args.no_vlm else args.vlm)):
        _check_checkpoint(option, value)
    _check_exposure(args.host, token, args.insecure)
    _check_search_device(args.search_device)
    listener = bind(args.host, args.port)
    try:
        return _serve(args, token, listener)
    finally:
        listener.close()


def _serve(args: argparse.Namespace, token: str | None, listener: socket.socket) -> int:
    try:
        import uvicorn

        from llama_index_vlm.server import ServerLimits, create_app
    except ImportError as error:
        raise UsageError(
            f"serve needs the server extra ({error.name} is missing): "
            "pip install 'llama-index-vlm[server]'"
        ) from None
    from llama_index_vlm.cli.common import open_store

    store = open_store(args.store, must_exist=False)
    load_models = _model_loader(args, store)
    limits = ServerLimits(
        max_upload_bytes=args.max_upload_mb * 1024 * 1024,
        max_pages_per_file=args.max_pages,
        generation_slots=args.slots,
        dpi=args.dpi,
    )
    app = create_app(
        store,
        load_models=load_models,
        token=token,
        limits=limits,
        # On loopback, only requests that name a loopback host: no DNS-rebinding page gets in.
        allowed_hosts=[*_LOOPBACK_HOSTS, args.host] if _is_loopback(args.host) else None,
        search_device=args.search_device,
        search_processes=args.search_processes,
    )
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            log_level="info" if args.verbose else "warning",
            timeout_graceful_shutdown=5,
        )
    )
    state = app.state.server
    threading.Thread(target=_stop_if_loading_fails, args=(state, server), daemon=True).start()
    print(f"llama-index-vlm: serving {args.store} at {_url(listener, token)}", flush=True)
    print("  loading the models; GET /health says when they are ready. Ctrl-C stops.", flush=True)
    try:
        server.run(sockets=[listener])
    except KeyboardInterrupt:  # uvicorn re-raises Ctrl-C once it has shut down: the normal end
        pass
    if state.load_error is not None:
        raise state.load_error
    print("llama-index-vlm: stopped", flush=True)
    return 0


def _model_loader(args: argparse.Namespace, store: Any) -> Any:
    """The server's model loader (run once it listens), with the checkpoints checked and
    placed now, so a missing checkpoint or a lack of memory is an error before it listens."""
    from llama_index_vlm.cli.models import (
        encoder_name,
        load_encoder,
        load_vlm,
        place,
        retriever_adapter,
        vlm_name,
    )
    from llama_index_vlm.server import Models

    retriever = encoder_name(args.model, store)
    answerer = None if args.no_vlm else vlm_name(args.vlm)
    quantized = {answerer: args.quantization} if answerer and args.quantization else None
    placement = place(
        [retriever, *([answerer] if answerer else [])], args.device, args.dtype, quantized=quantized
    )

    def load_models() -> Models:
        encoder = load_encoder(
            retriever,
            store,
            placement,
            model_given=args.model is not None,
            verbose=args.verbose,
            # A store built with a fine-tuned adapter is served with it.
            adapter=retriever_adapter(args.model, None, store),
        )
        vlm = None
        if answerer is not None:
            vlm = load_vlm(
                answerer,
                placement,
                args.max_new_tokens,
                quantization=args.quantization,
                verbose=args.verbose,
            )
        return Models(encoder=encoder, vlm=vlm)

    return load_models


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port``, or a :class:`UsageError` saying why not."""
    try:
        family, kind, protocol, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror as error:
        raise UsageError(f"--host {host}: not an address of this machine ({error})") from None
    listener = socket.socket(family, kind, protocol)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind(address)
        listener.listen(128)
    except OSError as error:
        listener.close()
        if error.errno == errno.EADDRINUSE:
            raise UsageError(
                f"port {port} on {host} is in use (another server?); pass --port N, or --port 0 "
                "for any free port"
            ) from None
        raise UsageError(f"cannot listen on {host}:{port}: {error.strerror or error}") from None
    listener.set_inheritable(True)
    return listener


def _token(args: argparse.Namespace) -> str | None:
    token = args.token if args.token is not None else os.environ.get(TOKEN_ENV)
    if token is not None and not token.strip():
        raise UsageError(f"the token is empty; give a secret with --token or {TOKEN_ENV}")
    return token


def _check_store(uri: str) -> None:
    if "://" in uri or os.path.isdir(uri):
        return
    if os.path.exists(uri):
        raise UsageError(f"{uri} is a file, not an index directory; choose another --store")
    option = "" if uri == DEFAULT_STORE else f" --store {uri}"
    raise UsageError(
        f"no index at {uri}; run `llama-index-vlm index PATH{option}` first, or create the "
        f"folder (mkdir {uri}) to start an empty index and add documents from the page"
    )


def _check_checkpoint(option: str, name: str | None) -> None:
    """A local checkpoint must be a directory; a hub id (``org/name``) is checked when loaded."""
    if name is None:
        return
    if os.path.exists(name):
        if not os.path.isdir(name):
            raise UsageError(f"{option} {name}: a file, not a checkpoint directory")
        return
    looks_local = name.startswith((".", "/", "~", os.sep)) or name.count("/") > 1
    if looks_local:
        raise UsageError(f"{option} {name}: no such checkpoint directory")


def _check_search_device(device: str | None) -> None:
    if device is None:
        return
    from llama_index_vlm.errors import UnsupportedDeviceError
    from llama_index_vlm.search import resolve_search_device

    try:
        resolve_search_device(device)
    except UnsupportedDeviceError as error:
        raise UsageError(f"--search-device: {error}") from None


def _check_exposure(host: str, token: str | None, insecure: bool) -> None:
    if _is_loopback(host) or token is not None or insecure:
        return
    raise UsageError(
        f"refusing to listen on {host} without a token: anyone who can reach this machine could "
        f"read, upload and delete your documents. Set {TOKEN_ENV} (or --token), or pass "
        "--insecure if every machine on that network may do so"
    )


def _is_loopback(host: str) -> bool:
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be 0 to 65535, not {value}")
    return value


def _url(listener: socket.socket, token: str | None) -> str:
    host, port = listener.getsockname()[:2]
    host = f"[{host}]" if ":" in host else host
    if host in ("0.0.0.0", "[::]"):
        host = socket.gethostname()
    return f"http://{host}:{port}/" + (f"?token={token}" if token else "")


def _stop_if_loading_fails(state: Any, server: Any) -> None:
    state.wait_until_loaded()
    if state.load_error is not None:
        server.should_exit = True  # run_serve then raises the error
