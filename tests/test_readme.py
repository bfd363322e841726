"""The README's code example runs as written."""

import json
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_readme_compose_example_trains_logs_and_checkpoints(tmp_path, monkeypatch):
    readme = (REPO / "README.md").read_text()
    (code,) = [block for block in re.findall(r"```python\n(.*?)```", readme, re.S) if "trainer.run" in block]
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md", "exec"), {})
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    validation = [r for r in records if r["phase"] == "validation"]
    assert [r["epoch"] for r in validation] == [1, 2, 3] and validation[-1]["accuracy"] > 0.9
    assert any(r["phase"] == "batch" for r in records)
    assert {p.name for p in (tmp_path / "checkpoints").glob("checkpoint_*.pt")} == {"checkpoint_46.pt", "checkpoint_69.pt"}
