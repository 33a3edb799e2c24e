"""The controller's write log: a JSON line per record, readable after a kill cut one short."""

from __future__ import annotations

from pathlib import Path

from kftenancy.controllers.writelog import WriteLog, read_write_log


def test_lines_are_appended_at_once_and_a_cut_line_is_dropped(tmp_path: Path) -> None:
    path = tmp_path / "writes.jsonl"
    log = WriteLog(path, "replica-a")
    log.record("reconcile", name="alice")
    log.write("apply", "RoleBinding", "namespaceAdmin", "alice")
    # visible before close (line-buffered), as a SIGKILLed replica leaves it
    assert [e["what"] for e in read_write_log(path)] == ["reconcile", "apply"]
    log.close()
    with path.open("a") as f:
        f.write('{"t": 1, "who": "replica-a", "what": "ap')  # killed mid-line
    entries = read_write_log(path)
    assert [(e["who"], e["what"], e.get("kind"), e.get("namespace")) for e in entries] == [
        ("replica-a", "reconcile", None, None),
        ("replica-a", "apply", "RoleBinding", "alice"),
    ]
    assert all(isinstance(e["t"], float) for e in entries)
