"""JSONL sources: line-number ids, follow mode (tail -f), a partial last line waits for its newline."""

from __future__ import annotations

from cadence.data.streams import JsonlSource


def test_follow_mode_reads_lines_appended_later_and_waits_for_a_complete_line(tmp_path):
    path = tmp_path / "live.jsonl"
    path.write_bytes(b'{"x": [1]}\n{"x": [2]}\n')
    source = JsonlSource(path, follow=True, poll_seconds=0.01)
    assert [m.id for m in source.read(10, 50)] == ["1", "2"]
    assert source.read(10, 30) == [] and not source.exhausted  # waiting, not ended
    with open(path, "ab") as f:
        f.write(b'{"x": [3')  # a writer mid-line
        f.flush()
        assert source.read(10, 30) == []
        f.write(b"]}\n")
    [m] = source.read(10, 50)
    assert (m.id, m.payload) == ("3", b'{"x": [3]}')
    source.close()


def test_without_follow_the_file_ends_and_a_restart_skips_what_was_trained(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"\n".join(b'{"x": [%d]}' % i for i in range(5)))  # no newline after the last line
    assert [m.id for m in JsonlSource(path, start_after=3).read(10, 0)] == ["4", "5"]
    source = JsonlSource(path)
    source.read(10, 0)
    assert source.exhausted
