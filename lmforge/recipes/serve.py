"""`lmforge serve` as a library function: load a checkpoint, build the app, run it on uvicorn until a signal.

SIGTERM / SIGINT: uvicorn stops accepting connections, lets the requests in flight finish (streams
included, up to --request-timeout), then the app's lifespan stops the model worker. After a SIGTERM drain
``serve`` returns 0 (uvicorn re-raises the signal once it is done; a handler installed here catches it).
"""
from __future__ import annotations

import dataclasses
import signal
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from lmforge.errors import ConfigError


@dataclass
class ServeConfig:
    """Everything `lmforge serve` takes."""

    model: str  # checkpoint directory (lmforge or HF)
    host: str = "127.0.0.1"  # the address to listen on (0.0.0.0: every interface)
    port: int = 8000  # 0: any free port (the chosen one is printed)
    device: str | None = None  # cpu, cuda, ... (default: cuda when available)
    name: str | None = None  # the model id the API reports (default: the directory's name)
    log_level: str = "info"  # uvicorn's access / error log level
    settings: dict[str, Any] = field(default_factory=dict)  # ServeSettings fields (batching and limits)


def bind(host: str, port: int) -> socket.socket:
    """A listening socket; ConfigError naming the address when it cannot be had."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        return socket.create_server((host, port), family=family, backlog=2048)
    except OSError as err:
        raise ConfigError(f"cannot listen on {host}:{port} ({err.strerror or err}); pick another --port or "
                          "--host.") from None


def serve(config: ServeConfig, *, ready: Callable[[str], None] | None = None) -> int:
    """Serve ``config.model`` until SIGTERM / SIGINT; 0 after a clean drain. ``ready(url)`` is called once the
    socket listens (the CLI prints it)."""
    try:
        import uvicorn  # noqa: F401
        from lmforge.serving.app import ServeSettings, create_app
    except ImportError as err:
        raise ConfigError(f"lmforge serve needs the serve extra ({err.name} is missing): "
                          "pip install 'lmforge[serve]'.") from None
    from pathlib import Path

    from lmforge.recipes.loading import load_model_and_tokenizer
    from lmforge.train.distributed import resolve_device

    known = {f.name for f in dataclasses.fields(ServeSettings)}
    unknown = set(config.settings) - known
    if unknown:
        raise ConfigError(f"unknown serve settings {sorted(unknown)}; known: {sorted(known)}.")
    settings = ServeSettings(model_name=config.name or Path(config.model).resolve().name, **config.settings)
    check_settings(settings)
    model, tokenizer = load_model_and_tokenizer(config.model, resolve_device(config.device))
    app = create_app(model, tokenizer, settings, model_dir=config.model)
    sock = bind(config.host, config.port)
    host, port = sock.getsockname()[:2]
    url = f"http://{'[' + host + ']' if ':' in host else host}:{port}"
    server = uvicorn.Server(uvicorn.Config(app, log_level=config.log_level,
                                           timeout_graceful_shutdown=int(settings.request_timeout) + 5))
    if ready is not None:
        ready(url)
    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, lambda *_: None) if main else None
    try:
        server.run(sockets=[sock])
    finally:
        if main:
            signal.signal(signal.SIGTERM, previous)
        sock.close()
    return 0


def check_settings(settings: Any) -> None:
    """ConfigError for limits that cannot work."""
    for name in ("max_batch", "max_new_tokens_limit", "max_queue", "max_body_bytes"):
        if getattr(settings, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(settings, name)}.")
    if settings.batch_wait_ms < 0:
        raise ConfigError(f"--batch-wait-ms must be >= 0, got {settings.batch_wait_ms}.")
    if settings.max_input_tokens is not None and settings.max_input_tokens < 1:
        raise ConfigError(f"--max-input-tokens must be >= 1, got {settings.max_input_tokens}.")
    if not settings.request_timeout > 0:
        raise ConfigError(f"--request-timeout must be > 0 seconds, got {settings.request_timeout}.")
    if settings.api_key is not None and not settings.api_key.strip():
        raise ConfigError("--api-key is empty; give a key or leave the flag out.")


__all__ = ["ServeConfig", "bind", "check_settings", "serve"]
