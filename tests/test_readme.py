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


def test_readme_binary_example_trains_with_its_own_metric(tmp_path, monkeypatch):
    readme = (REPO / "README.md").read_text()
    (code,) = [block for block in re.findall(r"```python\n(.*?)```", readme, re.S) if 'task="binary"' in block]
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    summary = namespace["summary"]
    assert summary["status"] == "completed" and summary["monitor"] == "balanced:max" and summary["best_value"] > 0.9
    validation = [json.loads(line) for line in (tmp_path / "runs" / "cancer" / "metrics.jsonl").read_text().splitlines()
                  if '"validation"' in line]  # fmt: skip
    assert validation[-1]["auc"] > 0.95


def test_every_cli_option_is_documented_in_the_readme_and_docs():
    from flint.recipes.app.cli import build_parser

    commands = build_parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    options = {o for sub in commands.values() for a in sub._actions for o in a.option_strings if o != "--help"}
    for doc in ("README.md", "docs/cli.md"):
        text = (REPO / doc).read_text()
        assert [o for o in sorted(options) if o.startswith("--") and o not in text] == [], doc
