"""Request ids, the access log line, and Prometheus metrics moving as requests are served."""

from __future__ import annotations

import io
import json
import logging
import re
import threading
from logging.handlers import QueueHandler, QueueListener
from queue import SimpleQueue

import pytest
from fastapi.testclient import TestClient

from app.operations.logs import skip_unused_record_fields, start_listener
from model_store.mnist_data import MnistSplit
from tests.app.conftest import encode
from tests.support.waiting import wait_until


def metric(client: TestClient, sample: str, **labels: str) -> float:
    """The value of one sample in /metrics, 0 if absent."""
    wanted = ",".join(f'{key}="{value}"' for key, value in labels.items())
    pattern = re.compile(rf"^{re.escape(sample)}(?:\{{{re.escape(wanted)}\}})? (\S+)$", re.MULTILINE)
    found = pattern.search(client.get("/metrics").text)
    return float(found.group(1)) if found else 0.0


def test_request_id_is_echoed_or_made(client: TestClient) -> None:
    assert client.get("/healthz", headers={"X-Request-ID": "abc-123"}).headers["x-request-id"] == "abc-123"
    made = client.get("/healthz").headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", made)
    forged = client.get("/healthz", headers={"X-Request-ID": 'bad"\nid'}).headers["x-request-id"]
    assert forged != 'bad"\nid' and re.fullmatch(r"[0-9a-f]{32}", forged)


def test_model_version_header_on_predictions(client: TestClient) -> None:
    assert client.get("/test/5").headers["x-model-version"] == "1"
    assert "x-model-version" not in client.get("/healthz").headers


def test_one_access_log_line_per_request(client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("app.access")
    logger.addHandler(caplog.handler)  # the app's loggers do not propagate to the root
    try:
        client.get("/test/128", headers={"X-Request-ID": "trace-1"})
    finally:
        logger.removeHandler(caplog.handler)
    # One emitted record (caplog may hear it through two handlers, so count distinct objects).
    records = list({id(r): r for r in caplog.records if r.name == "app.access"}.values())
    assert len(records) == 1
    record = records[0].__dict__  # the access fields are extras, set on the record by the app
    assert (record["method"], record["route"], record["status"], record["model_version"]) == (
        "GET",
        "/test/{index}",
        200,
        1,
    )
    assert record["request_id"] == "trace-1" and record["latency_ms"] > 0


def test_access_records_are_formatted_as_json_on_the_listener_thread(client: TestClient) -> None:
    queued = next(h for h in logging.getLogger("app").handlers if h.get_name() == "mnist-serve")
    listener = queued.listener  # type: ignore[attr-defined]
    output = listener.handlers[0]
    formatted: list[tuple[str, threading.Thread]] = []
    done = threading.Event()

    class Spy(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.name == "app.access" and getattr(record, "request_id", "") == "json-1":
                formatted.append((output.format(record), threading.current_thread()))
                done.set()

    spy = Spy()
    listener.handlers = (*listener.handlers, spy)
    try:
        client.get("/test/128", headers={"X-Request-ID": "json-1"})
        assert done.wait(30), "the access record never reached the listener"
    finally:
        listener.handlers = tuple(h for h in listener.handlers if h is not spy)
    line, thread = formatted[0]
    body = json.loads(line)
    assert "\n" not in line
    assert (body["status"], body["route"], body["request_id"], body["level"]) == (
        200,
        "/test/{index}",
        "json-1",
        "INFO",
    )
    assert thread is listener._thread and thread is not threading.main_thread()


def test_records_skip_the_fields_no_line_shows(client: TestClient) -> None:
    # No caller lookup (a walk up the stack per record) and no thread or process names: no line of
    # ours shows them, and they were a third of what a record cost the event loop. The worker start
    # (`app.cli.worker_app`) turns them off for its whole process; here, for this test only.
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    keep = Keep()
    access = logging.getLogger("app.access")
    access.addHandler(keep)
    kept = (logging._srcfile, logging.logThreads, logging.logProcesses, logging.logMultiprocessing)  # type: ignore[attr-defined]
    skip_unused_record_fields()
    try:
        access.info("fields", extra={"request_id": "fields-1"})
    finally:
        access.removeHandler(keep)
        logging._srcfile, logging.logThreads, logging.logProcesses, logging.logMultiprocessing = kept  # type: ignore[attr-defined]
    (record,) = records
    assert (record.funcName, record.lineno) == ("(unknown function)", 0)
    assert (record.threadName, record.processName, record.process) == (None, None, None)


def test_metrics_move_as_requests_are_served(client: TestClient, test_split: MnistSplit) -> None:
    labels = {"method": "GET", "route": "/test/{index}", "status": "200"}
    before_requests = metric(client, "mnist_http_requests_total", **labels)
    before_eights = metric(client, "mnist_predictions_total", digit="8")
    before_batches = metric(client, "mnist_batch_size_count")
    before_404 = metric(
        client, "mnist_http_requests_total", method="GET", route="/test/{index}", status="404"
    )
    for _ in range(3):
        assert client.get("/test/128").json()["prediction"] == 8
    client.get("/test/10000")
    client.post("/predict", files={"file": ("d.png", encode(test_split.images[128]))})
    assert metric(client, "mnist_http_requests_total", **labels) == before_requests + 3
    assert (
        metric(client, "mnist_http_requests_total", method="GET", route="/test/{index}", status="404")
        == before_404 + 1
    )
    assert metric(client, "mnist_predictions_total", digit="8") == before_eights + 4
    assert metric(client, "mnist_batch_size_count") >= before_batches + 4
    assert (
        metric(client, "mnist_http_request_duration_seconds_count", method="GET", route="/test/{index}") >= 4
    )
    assert metric(client, "mnist_model_loaded", name="mnist", version="1") == 1
    assert metric(client, "mnist_batch_queue_delay_seconds_count") >= 4


def test_the_app_logger_queues_its_records_to_a_listener_thread(client: TestClient) -> None:
    queued = next(h for h in logging.getLogger("app").handlers if h.get_name() == "mnist-serve")
    assert type(queued) is QueueHandler
    assert isinstance(queued.listener, QueueListener)  # type: ignore[attr-defined]
    assert queued.listener._thread is not None  # type: ignore[attr-defined]  # started


def test_the_listener_writes_every_queued_record_in_order_and_stop_loses_none() -> None:
    queue: SimpleQueue[logging.LogRecord] = SimpleQueue()
    stream = io.StringIO()
    listener = start_listener(queue, logging.Formatter("%(levelname)s %(message)s"), stream)
    for i in range(100):
        queue.put(logging.makeLogRecord({"msg": f"line {i}", "levelname": "INFO", "levelno": logging.INFO}))
    listener.stop()
    assert stream.getvalue().splitlines() == [f"INFO line {i}" for i in range(100)]


class CountingStream(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        return super().write(text)


def test_records_queued_together_reach_the_stream_in_one_write_without_waiting_for_stop() -> None:
    """The log thread writes once per burst, not once per record: under load, once per request."""
    queue: SimpleQueue[logging.LogRecord] = SimpleQueue()
    stream = CountingStream()
    listener = start_listener(queue, logging.Formatter("%(message)s"), stream, gather_seconds=0.2)
    try:
        for i in range(50):
            queue.put(logging.makeLogRecord({"msg": f"line {i}", "levelno": logging.INFO}))
        wait_until(lambda: stream.getvalue().count("\n") == 50, timeout=10)
        assert stream.writes == 1
    finally:
        listener.stop()
