"""docs/callbacks.md's example of the callbacks in another Lightning project runs as written: the
fenced block after ``<!-- example: another-project -->`` is executed on its own (a plain
LightningModule, no part of this project but the callbacks)."""

from __future__ import annotations

import re
from pathlib import Path

DOC = Path(__file__).resolve().parents[2] / "docs" / "callbacks.md"


def example(marker: str) -> str:
    match = re.search(rf"<!-- example: {marker} -->\s*```python\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)
    assert match, f"docs/callbacks.md has no example marked {marker!r}"
    return match.group(1)


def test_the_callbacks_example_runs_in_a_plain_lightning_project(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # whatever Lightning writes goes here
    namespace: dict = {"__name__": "docs_callbacks_example"}
    exec(compile(example("another-project"), str(DOC), "exec"), namespace)
    selection, escalation, trainer = namespace["selection"], namespace["escalation"], namespace["trainer"]
    assert trainer.current_epoch >= 1 and len(escalation.monitor_history) >= 1
    # the escalation drives the selection it was given: the k in use is the schedules' current one
    assert selection.current_k == escalation.current_k
    assert escalation.sigma_history[0] == 0.1
