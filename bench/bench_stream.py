"""Claim 4: the stream strategy. Fashion-MNIST replayed through a real Redis at a fixed rate, learned online
(test-then-train) by the 784-128-64-10 MLP with SGD while a client calls /predict at a fixed rate.

Reports sustained samples/s, stream lag, p50/p99 /predict latency, memory growth and the CPU time per
trained sample of each process over >= 60 s, and the learner against `cadence train --strategy online` on
the same model, measured before and after it (A B A). The default rate offers more than the learner takes
on a 2-core machine, so the figure is its capacity (the lag then grows; at a rate it keeps up with, the lag
stays flat and samples/s equals the rate).
Run: `.venv/bin/python bench/bench_stream.py` (CADENCE_BENCH_STREAM_SECONDS: 60, CADENCE_BENCH_STREAM_RATE:
messages/s offered, 20000).
"""

from __future__ import annotations

import http.client
import multiprocessing
import os
import shutil
import socket
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import orjson
import redis

import fashion
from cadence.config import build_config
from cadence.data.datasets import FASHION_CLASSES
from cadence.data.streams.redis import RedisSource
from cadence.serve import Server, StreamLearner, create_app
from common import write

SECONDS = float(os.environ.get("CADENCE_BENCH_STREAM_SECONDS", "60"))
RATE = float(os.environ.get("CADENCE_BENCH_STREAM_RATE", "20000"))  # messages/s offered by the producer
PREDICT_EVERY = 0.01  # one /predict call (one row) every 10 ms
MAXLEN = 100_000  # the producer trims the stream to about this many entries (memory), far beyond any lag
LR = 0.001


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _produce(port: int, seconds: float, rate: float, ready) -> None:
    """XADD Fashion-MNIST messages at `rate` for `seconds`. The commands are encoded once, ahead (RESP bytes
    of `XADD fashion MAXLEN ~ N * data <json>`), and sent in pipelines of ~5 ms: the producer stands for
    clients on other machines, so it should take little of this machine's CPU from the learner."""
    images, labels, _, _ = fashion.load()
    x = images.reshape(len(images), -1)
    conn = redis.Redis(port=port).connection_pool.get_connection()
    packed = [
        b"".join(
            conn.pack_command(
                "XADD",
                "fashion",
                "MAXLEN",
                "~",
                MAXLEN,
                "*",
                "data",
                orjson.dumps({"x": x[i].tolist(), "y": int(labels[i])}),
            )
        )
        for i in range(len(x))
    ]
    ready.set()
    start, i, batch = time.perf_counter(), 0, max(1, int(rate / 200))
    while time.perf_counter() - start < seconds:
        conn.send_packed_command([b"".join(packed[(i + k) % len(packed)] for k in range(batch))])
        for _ in range(batch):
            conn.read_response()
        i += batch
        wait = start + i / rate - time.perf_counter()
        if wait > 0:
            time.sleep(wait)


def _predict_client(port: int, row: list, stop, results) -> None:
    """Its own process (a client does not share the learner's GIL): one /predict every PREDICT_EVERY s,
    over one kept-alive connection (http.client: a client costs this machine little CPU)."""
    latencies, errors = [], []
    conn = http.client.HTTPConnection("127.0.0.1", port)
    body, headers = orjson.dumps({"rows": [row]}), {"content-type": "application/json"}
    nxt = time.perf_counter()
    while not stop.is_set():
        t0 = time.perf_counter()
        conn.request("POST", "/predict", body, headers)
        reply = conn.getresponse()
        reply.read()
        if reply.status == 200:
            latencies.append(time.perf_counter() - t0)
        elif reply.status != 503:
            errors.append(reply.status)
        nxt += PREDICT_EVERY
        time.sleep(max(0.0, nxt - time.perf_counter()))
    conn.close()
    results.put((latencies, errors))


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process `pid` so far (all its threads), from /proc."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        out.append(int(entry))
            except (OSError, ValueError, IndexError):
                continue
    return out


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def train_online_rate(seconds: float = 10.0) -> float:
    """`cadence train --strategy online` on the same model and data: samples/s of its updates."""
    from cadence.data.datasets import load_data
    from cadence.engine import train

    data = load_data(build_config({"data": {"name": "fashion-mnist"}}).data)
    run = train("mlp:128,64", data, strategy="online", optimizer="sgd", lr=LR, max_epochs=1, max_seconds=seconds)
    return run.samples_per_s


def stream_run(workdir: Path) -> dict:
    port = _free_port()
    server_proc = subprocess.Popen(
        [
            shutil.which("redis-server"),
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        stdout=subprocess.DEVNULL,
    )
    try:
        client = redis.Redis(port=port)
        for _ in range(200):
            try:
                client.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.02)
        spawn = multiprocessing.get_context("spawn")
        ready = spawn.Event()
        producer = spawn.Process(target=_produce, args=(port, SECONDS + 10, RATE, ready))
        producer.start()
        ready.wait(timeout=120)
        cfg = build_config(
            {
                "model": {"spec": "mlp:128,64"},
                "optimizer": {"name": "sgd", "lr": LR},
                "stream": {
                    "n_features": 784,
                    "n_classes": 10,
                    "center": fashion.MEAN * 255,
                    "scale": fashion.STD * 255,
                    "class_names": FASHION_CLASSES,
                },
            }
        )
        learner = StreamLearner(
            cfg, RedisSource(f"redis://127.0.0.1:{port}/fashion"), workdir / "run", log=lambda s: None
        )
        api = Server(create_app(learner.store, learner.stats), "127.0.0.1", 0).start()
        worker = threading.Thread(target=learner.run)
        worker.start()
        images, _, _, _ = fashion.load()
        stop, results = spawn.Event(), spawn.Queue()
        clients = spawn.Process(
            target=_predict_client, args=(api.port, images[0].reshape(-1).tolist(), stop, results)
        )
        clients.start()
        samples, t0 = [], time.perf_counter()
        known = {server_proc.pid, producer.pid, clients.pid}
        pids = {"redis-server": server_proc.pid, "producer": producer.pid, "predict client": clients.pid}
        while time.perf_counter() - t0 < SECONDS:
            time.sleep(1.0)
            s = learner.stats()
            if "parse worker" not in pids:  # the learner's forked checking process
                pids.update(("parse worker", p) for p in _children(os.getpid()) if p not in known)
            cpu = {name: _cpu_seconds(pid) for name, pid in {**pids, "learner": os.getpid()}.items()}
            samples.append(
                {
                    "t": time.perf_counter() - t0,
                    "trained": s["samples_trained"],
                    "lag": s.get("lag"),
                    "rss_mb": _rss_mb(),
                    "cpu_seconds": cpu,
                }
            )
        learner.request_stop()
        worker.join()
        stop.set()
        latencies, errors = results.get(timeout=60)
        clients.join()
        api.stop()
        producer.terminate()
        producer.join()
    finally:
        server_proc.terminate()
        server_proc.wait()
    warm = [s for s in samples if s["t"] >= 5.0]  # after the first published snapshot and warm-up
    rate = (warm[-1]["trained"] - warm[0]["trained"]) / (warm[-1]["t"] - warm[0]["t"])
    lags = [s["lag"] for s in warm if s["lag"] is not None]
    lat_ms = sorted(1000 * v for v in latencies)
    trained = warm[-1]["trained"] - warm[0]["trained"]
    # CPU time per trained sample of each process over the warm window ("learner" is this process: the
    # learner's threads and the HTTP server's), so a slow or busy machine still shows where time goes.
    cpu_us = {
        name: 1e6 * (warm[-1]["cpu_seconds"][name] - warm[0]["cpu_seconds"].get(name, 0.0)) / max(trained, 1)
        for name in warm[-1]["cpu_seconds"]
    }
    return {
        "seconds": SECONDS,
        "offered_rate": RATE,
        "samples_per_s": rate,
        "samples_trained": samples[-1]["trained"],
        "lag_median": statistics.median(lags) if lags else None,
        "lag_max": max(lags) if lags else None,
        "lag_first_last": [lags[0], lags[-1]] if lags else None,  # flat: the learner keeps up
        "predict_calls": len(lat_ms),
        "predict_errors": len(errors),
        "predict_p50_ms": lat_ms[len(lat_ms) // 2] if lat_ms else None,
        "predict_p99_ms": lat_ms[int(0.99 * (len(lat_ms) - 1))] if lat_ms else None,
        "cpu_us_per_sample": cpu_us,
        "rss_mb_start": warm[0]["rss_mb"],
        "rss_mb_end": warm[-1]["rss_mb"],
        "engine": learner.engine.name,
        "window_accuracy": learner.metrics.values()["window_accuracy"],
        "trace": samples,
    }


def main() -> dict:
    online_before = train_online_rate()
    with tempfile.TemporaryDirectory() as tmp:
        stream = stream_run(Path(tmp))
    online_after = train_online_rate()
    online = statistics.median([online_before, online_after])
    result = {
        "stream": stream,
        "train_online_samples_per_s": [online_before, online_after],
        "learner_vs_train_online": stream["samples_per_s"] / online,
    }
    write("stream", [stream], {k: v for k, v in result.items() if k != "stream"})
    s = stream
    print(
        f"stream: {s['samples_per_s']:,.0f} samples/s sustained over {s['seconds']:.0f} s "
        f"(offered {RATE:,.0f}/s, {s['engine']}), lag median {s['lag_median']} max {s['lag_max']} "
        f"(first/last {s['lag_first_last']}), "
        f"/predict p50 {s['predict_p50_ms']:.2f} ms p99 {s['predict_p99_ms']:.2f} ms over "
        f"{s['predict_calls']} calls ({s['predict_errors']} errors), "
        f"RSS {s['rss_mb_start']:.0f} -> {s['rss_mb_end']:.0f} MB; CPU us/sample "
        f"{', '.join(f'{k} {v:.1f}' for k, v in s['cpu_us_per_sample'].items())}; cadence train --strategy online "
        f"{online:,.0f} samples/s, learner/online {result['learner_vs_train_online']:.2f}x"
    )
    return result


if __name__ == "__main__":
    main()
