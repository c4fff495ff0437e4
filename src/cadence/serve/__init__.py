"""Learning from a stream while serving: the learner (learner.py), published snapshots, the HTTP API,
read-only replicas, drift detection. Layer 5: may use the engine, never the reports or the CLI."""

from cadence.serve.app import Server, create_app, parse_address
from cadence.serve.learner import StreamLearner
from cadence.serve.replica import Replica
from cadence.serve.snapshots import Snapshot, SnapshotStore

__all__ = ["Replica", "Server", "Snapshot", "SnapshotStore", "StreamLearner", "create_app", "parse_address"]
