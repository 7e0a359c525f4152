"""``iollm up``: open the home, publish the packaged models, serve every API on one port."""

from __future__ import annotations

import logging
import socket
import sys
from collections.abc import Callable

import uvicorn

from .app import create_app, open_node
from .config import NodeConfig

log = logging.getLogger("iollm.node")


def serve(config: NodeConfig, announce: Callable[[dict], None] | None = None) -> None:
    """Run a node in the foreground until interrupted."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    parts = open_node(config)
    seeded = []
    if config.seed:
        from ..hub import seed_packaged_models

        token = parts.layout.read_token()
        assert token is not None
        seeded = seed_packaged_models(
            parts.hub, parts.accounts, token, log=lambda m: print(m, file=sys.stderr)
        )
    app = create_app(parts)
    info = {
        "api": config.url,
        "openai": f"{config.url}/v1",
        "hf_endpoint": config.url,
        "editor": f"{config.url}/ui",
        "home": str(config.home),
        "token_file": str(parts.layout.token),
        "seeded": [s["repo"] for s in seeded],
    }
    server = uvicorn.Server(
        uvicorn.Config(app, host=config.host, port=config.port, log_level="warning", access_log=False)
    )
    original_startup = server.startup

    async def startup(sockets=None) -> None:
        await original_startup(sockets)
        if announce is not None and server.started:
            announce(info)

    server.startup = startup  # type: ignore[method-assign]
    server.run(sockets=[_listen(config.host, config.port)])


def _listen(host: str, port: int) -> socket.socket:
    """Bind the API port before anything else starts: the Dask scheduler and workers pick free ports at
    startup and must never take the one this node was told to serve on."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise SystemExit(
            f"error: cannot listen on {host}:{port} ({exc.strerror}); stop whatever uses it or pick --port"
        ) from exc
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock
