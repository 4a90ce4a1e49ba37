"""Settings of the HTTP layer (keys, request limits, served name) and their defaults."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class ServerSettings:
    api_keys: list[str] = field(default_factory=list)
    api_key_file: str | None = None
    max_inputs_per_request: int = 2048
    max_request_bytes: int = 16 * 1024 * 1024
    served_model_name: str | None = None
    shutdown_grace: float = 30.0  # seconds a SIGTERM waits for in-flight work
