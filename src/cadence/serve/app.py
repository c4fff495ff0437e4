"""The HTTP API (FastAPI): POST /predict from the served snapshot, GET /metrics (Prometheus text),
GET /stats (JSON), GET /health; optional bearer token; 413/422 for oversized or malformed bodies.
Serving on a port (uvicorn in a thread) is `serve()` below; what is served is snapshots.py's.
"""

from __future__ import annotations

import hmac
import math
import sys
import threading
import time
from collections.abc import Callable

import numpy as np
import orjson
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from cadence.serve.snapshots import SnapshotStore

MAX_BODY_BYTES = 8 << 20
MAX_ROWS = 10_000
# Prometheus names of the stats that only grow (counters); every other number in stats() is a gauge.
COUNTERS = {
    "samples_trained",
    "samples_predicted_only",
    "dead_letters",
    "trimmed",
    "acked_without_training",
    "training_retries",
    "drift_events",
    "reconnects",
    "checkpoints",
    "published",
    "gate_held",
    "predict_requests",
}


class _StatsCollector:
    """Reads stats() at scrape time, so the learner's hot loop only bumps plain ints."""

    def __init__(self, stats: Callable[[], dict]):
        self.stats = stats

    def collect(self):
        for key, value in self.stats().items():
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                continue
            name = f"cadence_stream_{key}"
            if key in COUNTERS:
                yield CounterMetricFamily(name, key.replace("_", " "), value=value)
            else:
                yield GaugeMetricFamily(name, key.replace("_", " "), value=value)


def create_app(
    store: SnapshotStore,
    stats: Callable[[], dict] = dict,
    *,
    token: str | None = None,
    max_rows: int = MAX_ROWS,
    max_body_bytes: int = MAX_BODY_BYTES,
) -> FastAPI:
    """The API over `store`. `stats()` returns the numbers for /stats and /metrics; with `token`, every
    endpoint but /health needs `Authorization: Bearer <token>` (compared in constant time)."""
    app = FastAPI(title="cadence", docs_url=None, redoc_url=None, openapi_url=None)
    registry = CollectorRegistry(auto_describe=False)
    counts = {"predict_requests": 0}
    lock = threading.Lock()

    def all_stats() -> dict:
        snap = store.current
        out = dict(stats())
        out["predict_requests"] = counts["predict_requests"]
        out["snapshot_version"] = snap.version if snap else 0
        if store.published_at is not None:
            out["snapshot_age_seconds"] = time.time() - store.published_at
        return out

    registry.register(_StatsCollector(all_stats))
    expected = token.encode() if token else None

    def check_token(request: Request) -> None:
        if expected is None:
            return
        got = request.headers.get("authorization", "")
        scheme, _, value = got.partition(" ")
        if not (scheme.lower() == "bearer" and hmac.compare_digest(value.encode(), expected)):
            raise HTTPException(401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"})

    @app.post("/predict")
    async def predict(request: Request) -> Response:
        check_token(request)
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > max_body_bytes:
            raise HTTPException(413, f"body of {length} bytes is larger than {max_body_bytes}")
        body = bytearray()
        async for chunk in request.stream():  # also bounds a chunked body without a content-length
            body += chunk
            if len(body) > max_body_bytes:
                raise HTTPException(413, f"body is larger than {max_body_bytes} bytes")
        snap = store.current  # the one snapshot this whole answer comes from
        if snap is None:
            raise HTTPException(503, "no snapshot is published yet; the learner publishes after its first samples")
        rows = _rows(bytes(body), snap.meta["n_features"], max_rows)
        with lock:
            counts["predict_requests"] += 1
        return Response(orjson.dumps(snap.predict(rows)), media_type="application/json")

    @app.get("/metrics")
    def metrics(request: Request) -> Response:
        check_token(request)
        return Response(generate_latest(registry), media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.get("/stats")
    def get_stats(request: Request) -> Response:
        check_token(request)
        clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in all_stats().items()}
        return JSONResponse(clean)

    @app.get("/health")
    def health() -> dict:
        snap = store.current
        return {"status": "ok", "version": snap.version if snap else None}

    return app


def _rows(body: bytes, n_features: int, max_rows: int) -> np.ndarray:
    """The `rows` of a /predict body as (n, n_features) float32, or HTTP 422 saying what is wrong."""
    try:
        msg = orjson.loads(body)
    except orjson.JSONDecodeError as err:
        raise HTTPException(422, f"body is not JSON: {err}") from None
    rows = msg.get("rows") if isinstance(msg, dict) else None
    if not isinstance(rows, list) or not rows:
        raise HTTPException(422, 'expected {"rows": [[...features...], ...]} with at least one row')
    if len(rows) > max_rows:
        raise HTTPException(413, f"{len(rows)} rows; at most {max_rows} per request")
    try:
        with np.errstate(over="ignore"):  # overflow to inf is reported just below
            x = np.asarray(rows, dtype=np.float32)
    except (ValueError, TypeError):
        raise HTTPException(422, f"rows must be lists of {n_features} numbers each") from None
    if x.ndim != 2 or x.shape[1] != n_features:
        raise HTTPException(422, f"rows have shape {list(x.shape)}; expected [n, {n_features}]")
    if not np.isfinite(x).all():
        raise HTTPException(422, "rows hold NaN or infinite values (or numbers beyond float32)")
    return x


def parse_address(text: str) -> tuple[str, int]:
    """HOST:PORT, or PORT alone for the loopback address 127.0.0.1."""
    from cadence.errors import ConfigError

    host, _, port = text.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    if not port.isdigit() or not 0 <= int(port) < 65536:
        raise ConfigError(f"--serve {text!r} is not HOST:PORT. Fix: e.g. --serve 127.0.0.1:8000 (or 8000).")
    return host, int(port)


class Server:
    """uvicorn serving an app from a daemon thread of this process (the learner keeps the main thread)."""

    def __init__(self, app: FastAPI, host: str, port: int):
        import uvicorn

        config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False, lifespan="off")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="cadence-serve", daemon=True)

    def start(self, timeout: float = 10.0) -> Server:
        # The learner's thread holds the GIL between its C calls; at the default 5 ms switch interval a
        # request that needs the GIL a few times waits up to 5 ms each time. 1 ms keeps p99 latency low.
        sys.setswitchinterval(min(sys.getswitchinterval(), 0.001))
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                from cadence.errors import StreamError

                raise StreamError("the HTTP server did not start (is the port in use?)")
            time.sleep(0.01)
        return self

    @property
    def port(self) -> int:
        return self._server.servers[0].sockets[0].getsockname()[1]

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=5)
