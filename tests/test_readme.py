"""The README's code example runs as written; docs/cli.md names every option of the command line."""

import json
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


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


def test_every_cli_option_is_documented_in_docs_cli_md():
    from flint.recipes.app.cli import build_parser

    commands = build_parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    options = {o for sub in commands.values() for a in sub._actions for o in a.option_strings if o != "--help"}
    text = (REPO / "docs" / "cli.md").read_text()
    assert [o for o in sorted(options) if o.startswith("--") and o not in text] == []
