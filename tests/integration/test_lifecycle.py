"""Reliability of the service under clients as production has them: clients that leave,
deadlines, a model worker that dies, and a SIGTERM while requests are in flight."""

from __future__ import annotations

import re
import signal
import threading
import time

import httpx
import pytest

from conftest import ServiceProcess, live_server, make_service

LONG_TEXT = " ".join(f"word{i % 97} passage text" for i in range(70))  # ~250 MiniLM tokens


def _metric(url: str, name: str, labels: str = "") -> float:
    text = httpx.get(url + "/metrics").text
    found = re.search(rf"^{re.escape(name + labels)} (\S+)$", text, re.M)
    return float(found.group(1)) if found else 0.0


def _flood(url: str, clients: int, texts: int, timeout: float) -> list[object]:
    """``clients`` threads each send one request of ``texts`` long texts; their outcomes."""
    outcomes: list[object] = []

    def one() -> None:
        try:
            body = {"input": [LONG_TEXT] * texts}
            outcomes.append(httpx.post(url + "/v1/embeddings", json=body, timeout=timeout))
        except httpx.HTTPError as exc:
            outcomes.append(exc)

    threads = [threading.Thread(target=one) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return outcomes


def test_work_of_clients_that_left_is_not_computed():
    service = make_service("minilm", max_batch_tokens=1024)
    with live_server(service) as server:
        # 32 clients x 64 long texts (~500k tokens: minutes of work on 2 cores), each giving
        # up after 1 s (tokenized and queued by then), as pipelines with timeouts do.
        gone = _flood(server.url, clients=32, texts=64, timeout=1.0)
        assert all(isinstance(o, httpx.TimeoutException) or o.status_code == 429 for o in gone)
        assert any(isinstance(o, httpx.TimeoutException) for o in gone)
        started = time.monotonic()
        answer = httpx.post(server.url + "/v1/embeddings", json={"input": "hello"}, timeout=60)
        waited = time.monotonic() - started
        assert answer.status_code == 200
        assert waited < 15, f"a one-text request waited {waited:.1f} s behind abandoned work"
        dropped = _metric(server.url, "bridge_dropped_inputs_total", '{reason="cancelled"}')
        assert dropped > 0, "no queued input was dropped: the test tests nothing"
        left = _metric(server.url, "bridge_requests_total", '{route="/v1/embeddings",status="499"}')
        # Each 499 is a client that left; a client whose timeout passed before the server
        # read its request leaves no trace there, so under load a few may be missing.
        timeouts = sum(isinstance(o, httpx.TimeoutException) for o in gone)
        assert 0 < left <= timeouts and left >= timeouts - 3, (left, timeouts)


def test_a_request_whose_deadline_passes_in_the_queue_gets_504():
    service = make_service("minilm", max_batch_tokens=1024, max_queue_tokens=10**6)
    with live_server(service) as server:
        busy = threading.Thread(target=_flood, args=(server.url, 4, 64, 120))
        busy.start()  # several seconds of live work ahead in the queue
        deadline = time.monotonic() + 30
        while service.batcher.queued_tokens < 8192 and time.monotonic() < deadline:
            time.sleep(0.05)
        late = httpx.post(
            server.url + "/v1/embeddings",
            json={"input": "hello"},
            headers={"X-Request-Timeout": "0.2"},
            timeout=60,
        )
        bad = httpx.post(
            server.url + "/v1/embeddings",
            json={"input": "hello"},
            headers={"X-Request-Timeout": "soon"},
        )
        busy.join(120)
        assert late.status_code == 504, late.text
        assert late.json()["error"]["code"] == "deadline_exceeded"
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "X-Request-Timeout"
        assert _metric(server.url, "bridge_dropped_inputs_total", '{reason="deadline"}') == 1


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_health_and_ready_turn_503_when_a_worker_dies(tiny_qwen3_dir):
    service = make_service(tiny_qwen3_dir)
    with live_server(service) as server:
        assert httpx.get(server.url + "/health").status_code == 200

        def die(*_args, **_kw) -> None:
            raise SystemExit("simulated worker death")

        service.batcher._next_batch = die  # type: ignore[method-assign]
        ok = httpx.post(server.url + "/v1/embeddings", json={"input": "cats"}, timeout=30)
        assert ok.status_code == 200  # served, then the worker's next loop dies
        deadline = time.monotonic() + 10
        while service.batcher.alive and time.monotonic() < deadline:
            time.sleep(0.05)
        health = httpx.get(server.url + "/health")
        assert health.status_code == 503 and health.json()["status"] == "worker_dead"
        assert httpx.get(server.url + "/ready").status_code == 503
        assert _metric(server.url, "bridge_workers_alive") == 0


def test_sigterm_drains_in_flight_work_and_exits_0():
    service = ServiceProcess("--model", "minilm", "--device", "cpu").start()
    assert service.proc is not None
    answers: list[object] = []
    sent_before_term = threading.Event()

    def client() -> None:
        # Like a client behind a load balancer: stop sending here once refused (503).
        with httpx.Client(timeout=120) as http:
            while True:
                try:
                    body = {"input": [LONG_TEXT] * 32}
                    answer = http.post(service.url + "/v1/embeddings", json=body)
                except httpx.ConnectError as exc:  # the server is gone: never accepted
                    answers.append(exc)
                    return
                except httpx.HTTPError as exc:  # accepted, then lost: must never happen
                    answers.append(exc)
                    return
                answers.append(answer)
                sent_before_term.set()
                if answer.status_code != 200:
                    return

    threads = [threading.Thread(target=client) for _ in range(3)]
    try:
        for t in threads:
            t.start()
        assert sent_before_term.wait(120)
        service.proc.send_signal(signal.SIGTERM)
        termed = time.monotonic()
        ready = [httpx.get(service.url + "/ready", timeout=5).status_code for _ in range(3)]
        code = service.proc.wait(90)
        for t in threads:
            t.join(120)
    finally:
        service.stop()
    assert code == 0, service.log[-2000:]
    assert ready[0] == 503, "/ready must turn 503 as soon as the drain starts"
    lost = [a for a in answers if isinstance(a, httpx.HTTPError)
            and not isinstance(a, httpx.ConnectError)]  # fmt: skip
    assert lost == [], lost
    refused = [a for a in answers if isinstance(a, httpx.Response) and a.status_code != 200]
    for answer in refused:
        assert answer.status_code in (429, 503) and "retry-after" in answer.headers
    assert any(isinstance(a, httpx.Response) and a.status_code == 200 for a in answers)
    assert time.monotonic() - termed < 90
