"""A small HTTP client for Elasticsearch and OpenSearch, with the bridge's retry policy.

One client for both engines (they share the REST calls the bridge needs); it tells them
apart by Elasticsearch's ``X-Elastic-Product`` header, so it also works on nodes that
lack ``GET /`` (the Elasticsearch integ-test distribution).
"""

from __future__ import annotations

import logging
import ssl
from dataclasses import dataclass
from typing import Any, Literal

import httpx
import orjson

from bridge.clients.errors import ClientError
from bridge.clients.retry import DEFAULT_RETRY_SECONDS, call_with_retries

log = logging.getLogger(__name__)

EngineKind = Literal["elasticsearch", "opensearch"]


@dataclass(frozen=True)
class EngineInfo:
    kind: EngineKind
    version: str
    license: str  # Elasticsearch license type; "oss" for OpenSearch

    @property
    def major(self) -> int:
        return int(self.version.split(".")[0])


def _dumps(body: object) -> bytes:
    """JSON of a request body; numpy vectors as their own type's shortest digits."""
    return orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)


def _reason(body: object) -> str:
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        err = body["error"]
        root = (err.get("root_cause") or [{}])[0]
        return f"{err.get('type')}: {err.get('reason') or root.get('reason')}"
    return str(body)[:500]


def redact_url(url: str) -> str:
    """``https://user:secret@host`` -> ``https://***@host``."""
    scheme, sep, rest = url.partition("://")
    if sep and "@" in rest.split("/", 1)[0]:
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url


class EngineClient:
    def __init__(
        self,
        url: str,
        *,
        username: str | None = None,
        password: str | None = None,
        api_key: str | None = None,
        ca_file: str | None = None,
        verify: bool = True,
        timeout: float = 60.0,
        retry_for: float = DEFAULT_RETRY_SECONDS,
    ) -> None:
        self.url = url.rstrip("/")
        headers = {"content-type": "application/json"}
        if api_key:
            headers["authorization"] = f"ApiKey {api_key}"
        auth = (username, password or "") if username else None
        self._http = httpx.Client(
            timeout=timeout,
            headers=headers,
            auth=auth,
            verify=ssl.create_default_context(cafile=ca_file) if ca_file else verify,
        )
        self.retry_for = retry_for
        self._info: EngineInfo | None = None
        self._answered = False  # retry refused connections only once the engine has answered

    @property
    def safe_url(self) -> str:
        """The URL without credentials, for messages and logs."""
        return redact_url(self.url)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> EngineClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(
        self,
        method: str,
        path: str,
        body: Any = None,
        params: dict | None = None,
        content: bytes | None = None,
        headers: dict | None = None,
    ) -> httpx.Response:
        """One request with retries; the caller reads the status."""
        data = content if content is not None else (_dumps(body) if body is not None else None)

        def attempt() -> httpx.Response:
            try:
                response = self._http.request(
                    method, self.url + path, content=data, params=params, headers=headers
                )
            except httpx.ConnectError as exc:
                if self._answered:
                    raise  # a node that answered before: restarting, retried
                # A URL that never answered: a refused connection is final (not retried).
                raise ClientError(
                    f"cannot reach the engine at {self.safe_url}: {exc}; is it running, "
                    "and is this its URL? (bridge engine status lists the local ones)"
                ) from exc
            self._answered = True
            return response

        def say(reason: str) -> None:
            log.warning("retrying %s (%s) for up to %.0f s", self.safe_url, reason, self.retry_for)

        try:
            return call_with_retries(attempt, within=self.retry_for, on_retry=say)
        except httpx.TransportError as exc:
            raise ClientError(f"cannot reach the engine at {self.safe_url}: {exc}") from exc

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        params: dict | None = None,
        missing_ok: bool = False,
    ) -> Any:
        """JSON in, JSON out; raises ``ClientError`` with the engine's reason on failure."""
        return self._answer(method, path, self.send(method, path, body, params), missing_ok)

    @staticmethod
    def _answer(method: str, path: str, response: httpx.Response, missing_ok: bool = False) -> Any:
        """The JSON body, or ``ClientError`` carrying the engine's own reason."""
        if response.status_code == 404 and missing_ok:
            return None
        try:
            payload = response.json() if response.content else {}
        except ValueError:
            payload = response.text
        if response.status_code >= 400:
            raise ClientError(
                f"{method} {path} failed with {response.status_code}: {_reason(payload)}",
                response.status_code,
                payload,
            )
        return payload

    def info(self) -> EngineInfo:
        if self._info is None:
            response = self.send("GET", "/_nodes/_local", params={"filter_path": "nodes.*.version"})
            if response.status_code >= 400:
                raise ClientError(
                    f"{self.safe_url} does not look like Elasticsearch or OpenSearch "
                    f"(GET /_nodes answered {response.status_code})",
                    response.status_code,
                )
            version = next(iter(response.json()["nodes"].values()))["version"]
            if response.headers.get("x-elastic-product") == "Elasticsearch":
                lic = self.request("GET", "/_license", missing_ok=True) or {}
                license_type = lic.get("license", {}).get("type", "basic")
                self._info = EngineInfo("elasticsearch", version, license_type)
            else:
                self._info = EngineInfo("opensearch", version, "oss")
        return self._info

    def bulk(self, lines: list[dict], params: dict | None = None) -> dict:
        """Send NDJSON ``_bulk``; returns the engine's per-item answer."""
        content = b"".join(_dumps(line) + b"\n" for line in lines)
        response = self.send(
            "POST",
            "/_bulk",
            params=params,
            content=content,
            headers={"content-type": "application/x-ndjson"},
        )
        return self._answer("POST", "/_bulk", response)

    def exists(self, path: str) -> bool:
        return self.send("HEAD", path).status_code == 200
