"""The code in the docs runs as written: docs/handlers.md's custom handler, its test and the handler-test
pattern; docs/api.md's fit() example."""

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_handlers_md_examples_run():
    text = (REPO / "docs" / "handlers.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert len(blocks) == 3
    namespace: dict = {}
    for i, block in enumerate(blocks):  # one namespace: the test block uses the handler defined before it
        exec(compile(block, f"docs/handlers.md block {i + 1}", "exec"), namespace)
    assert namespace["GradNormLogger"].__name__ == "GradNormLogger" and "timer" in namespace


def test_api_md_example_runs_and_prints_what_it_says(capsys):
    text = (REPO / "docs" / "api.md").read_text()
    (block,) = [b for b in re.findall(r"```python\n(.*?)```", text, re.S) if "fit(" in b and "UpdateCounter" in b]
    exec(compile(block, "docs/api.md", "exec"), {})
    printed = capsys.readouterr().out.strip().splitlines()[-1]
    assert printed == "completed 4 32 True" and f"prints `{printed}`" in text


def test_api_md_fine_tuning_example_runs_and_prints_what_it_says(capsys):
    text = (REPO / "docs" / "api.md").read_text()
    (block,) = [b for b in re.findall(r"```python\n(.*?)```", text, re.S) if "init_from=" in b]
    exec(compile(block, "docs/api.md", "exec"), {})
    printed = capsys.readouterr().out.strip().splitlines()[-1]
    assert printed == "['accuracy', 'epoch', 'loss', 'val_accuracy', 'val_loss'] torch.Size([3, 2])" and f"prints `{printed}`" in text
