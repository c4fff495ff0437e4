"""Serving while learning: answers from one published snapshot each, the API's checks, replicas."""

from __future__ import annotations

import threading
import time

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from cadence.config import build_config
from cadence.data.streams.redis import RedisSource
from cadence.data.streams.replay import load_raw, replay
from cadence.serve import Replica, Server, SnapshotStore, StreamLearner, create_app, snapshots


def _learner(redis_server, stream_name, run_dir, **stream):
    settings = {"n_features": 64, "n_classes": 10, "center": 8.0, "scale": 6.0, "checkpoint_seconds": None,
                "publish_seconds": None, "idle_seconds": 0.5, **stream}  # fmt: skip
    cfg = build_config({"model": {"spec": "mlp:32"}, "optimizer": {"name": "sgd", "lr": 0.05}, "stream": settings})
    return StreamLearner(cfg, RedisSource(redis_server.url(stream_name)), run_dir, log=lambda s: None)


def test_every_answer_under_load_equals_the_snapshot_version_it_reports(
    redis_server, stream_name, tmp_path, one_thread
):
    x, y = load_raw("digits")
    replay(x, y, redis_server.url(stream_name), limit=20_000, repeat=12)
    settings = {"publish_every_samples": 300, "keep_snapshots": 10_000, "gate_tolerance": 1.0, "read_count": 32}
    learner = _learner(redis_server, stream_name, tmp_path / "run", **settings)
    server = Server(create_app(learner.store, learner.stats), "127.0.0.1", 0).start()
    worker = threading.Thread(target=learner.run)
    worker.start()
    rows = x[np.random.default_rng(0).choice(len(x), size=(8, 5))].astype(np.float32)  # 8 request bodies
    answers, errors = [], []

    def client(k: int) -> None:
        with httpx.Client(base_url=f"http://127.0.0.1:{server.port}") as http:
            for i in range(400):
                if not worker.is_alive():
                    return
                body = rows[(k + i) % len(rows)]
                reply = http.post("/predict", json={"rows": body.tolist()})
                if reply.status_code == 503:  # nothing published yet
                    continue
                if reply.status_code != 200:
                    errors.append(reply.text)
                    return
                answers.append(((k + i) % len(rows), reply.json()))

    clients = [threading.Thread(target=client, args=(k,)) for k in range(4)]
    for c in clients:
        c.start()
    for c in clients:
        c.join()
    worker.join()
    server.stop()
    assert not errors
    versions = {a["version"] for _, a in answers}
    assert len(versions) >= 3, versions  # the answers span several published snapshots
    published = {}
    for body, answer in answers:
        v = answer["version"]
        snap = published.setdefault(v, snapshots.read_version(tmp_path / "run" / "published", v))
        expected = snap.predict(rows[body])
        assert answer["probabilities"] == expected["probabilities"], f"version {v}"
        assert answer["labels"] == expected["labels"]


@pytest.fixture
def api(tmp_path):
    from torch import nn

    store = SnapshotStore(tmp_path / "published")
    store.publish(
        nn.Sequential(nn.Linear(3, 2)), {"n_features": 3, "task": "classification", "class_names": ["no", "yes"]}
    )
    return TestClient(create_app(store, lambda: {"samples_trained": 7, "window_accuracy": 0.5}, token="s3cret",
                                 max_body_bytes=2000))  # fmt: skip


AUTH = {"Authorization": "Bearer s3cret"}


def test_predict_answers_labels_probabilities_and_version(api):
    reply = api.post("/predict", json={"rows": [[0, 1, 2], [3, 4, 5]]}, headers=AUTH)
    assert reply.status_code == 200
    body = reply.json()
    assert body["version"] == 1 and set(body["labels"]) <= {"no", "yes"} and len(body["probabilities"]) == 2
    assert abs(sum(body["probabilities"][0]) - 1) < 1e-6


@pytest.mark.parametrize(
    ("body", "status", "says"),
    [
        (b"{not json", 422, "not JSON"),
        (b'{"rows": [[1, 2]]}', 422, "expected [n, 3]"),
        (b'{"rows": [["a", 2, 3]]}', 422, "numbers"),
        (b'{"rows": []}', 422, "at least one row"),
        (b'{"rows": [[1e39, 2, 3]]}', 422, "NaN or infinite"),
        (b'{"rows": [[1, 2, 3]], "pad": "' + b"x" * 3000 + b'"}', 413, "larger than 2000"),
    ],
)
def test_bad_predict_bodies_get_413_or_422_saying_why(api, body, status, says):
    reply = api.post("/predict", content=body, headers={**AUTH, "content-type": "application/json"})
    assert reply.status_code == status
    assert says in reply.json()["detail"]


def test_the_bearer_token_guards_everything_but_health(api):
    assert api.post("/predict", json={"rows": [[0, 1, 2]]}).status_code == 401
    assert (
        api.post("/predict", json={"rows": [[0, 1, 2]]}, headers={"Authorization": "Bearer wrong"}).status_code
        == 401
    )
    assert api.get("/stats").status_code == 401 and api.get("/metrics").status_code == 401
    assert api.get("/health").json() == {"status": "ok", "version": 1}


def test_metrics_are_prometheus_text_and_stats_json(api):
    text = api.get("/metrics", headers=AUTH).text
    assert "cadence_stream_samples_trained_total 7.0" in text
    assert "cadence_stream_window_accuracy 0.5" in text
    assert "cadence_stream_snapshot_version 1.0" in text
    stats = api.get("/stats", headers=AUTH).json()
    assert stats["samples_trained"] == 7 and stats["snapshot_version"] == 1


def test_a_replica_serves_and_reloads_what_the_learner_publishes(redis_server, stream_name, tmp_path):
    x, y = load_raw("digits")
    replay(x, y, redis_server.url(stream_name), limit=600)
    run_dir = tmp_path / "run"
    replica = Replica(run_dir, poll_seconds=0.05).start()
    assert replica.store.current is None
    learner = _learner(
        redis_server, stream_name, run_dir, publish_every_samples=200, gate_tolerance=1.0, max_samples=300
    )
    learner.run()
    deadline = time.monotonic() + 5
    while (replica.store.current is None or replica.store.current.version != learner.store.current.version) and (
        time.monotonic() < deadline
    ):
        time.sleep(0.02)
    replica.stop()
    assert replica.store.current.version == learner.store.current.version
    probe = x[:4].astype(np.float32)
    assert replica.store.current.predict(probe) == learner.store.current.predict(probe)
    assert replica.reloads >= 1


def test_the_quality_gate_keeps_a_better_served_snapshot_until_the_learner_catches_up(
    redis_server, stream_name, tmp_path
):
    x, y = load_raw("digits")
    replay(x, y, redis_server.url(stream_name + "-first"), limit=1797, repeat=2)
    first = _learner(redis_server, stream_name + "-first", tmp_path / "first")
    first.run()  # a good model, published
    good = first.store.current
    replay(x, y, redis_server.url(stream_name), limit=1797)
    store = SnapshotStore(tmp_path / "second" / "published", keep=100)
    store.swap(good)  # served while a fresh model starts learning
    learner = _learner(redis_server, stream_name, tmp_path / "second", publish_every_samples=100, window=200,
                       read_count=25)  # fmt: skip
    learner.store = store
    learner.run()
    # While the fresh model is worse than the served one on the same samples, nothing replaces it: measured
    # 5 held (every 100 samples), then 12 published once it caught up (window accuracy 0.905 at the end).
    assert learner.counts["gate_held"] >= 3
    first = snapshots.read_version(store.directory, good.version + 1)
    assert first.meta["samples"] >= 400


def test_gate_compares_on_the_same_samples_within_the_tolerance():
    from cadence.serve.gate import Gate

    gate = Gate("classification", window=200, tolerance=0.02)
    ones, zeros = np.ones(150), np.zeros(150)
    gate.observe((zeros, np.r_[ones[:135], zeros[:15]]), (zeros, np.r_[ones[:132], zeros[:18]]))  # .90 v .88
    assert gate.verdict() == "publish"  # worse by exactly the tolerance
    gate.observe((zeros[:50], ones[:50]), (zeros[:50], zeros[:50]))  # now .925 against .66
    assert gate.verdict() == "hold"
    gate.reset()
    gate.observe((zeros[:10], ones[:10]), (zeros[:10], zeros[:10]))
    assert gate.verdict() == "wait"  # ten samples say nothing yet
    regression = Gate("regression", window=200, tolerance=0.1)
    regression.observe((np.full(150, 1.0), ones), (np.full(150, 1.05), ones))  # mse 1.0 v 1.05: lower wins
    assert regression.verdict() == "publish"
    regression.observe((np.full(150, 1.0), ones), (np.full(150, 2.0), ones))
    assert regression.verdict() == "hold"
