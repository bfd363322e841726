"""The code in the docs runs as written: docs/handlers.md's composed loop, custom handler and its test;
docs/api.md's fit() examples; docs/cli.md's recipe for --task and --metrics."""

import json
import re
import shlex
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_handlers_md_handler_and_its_test_run():
    text = (REPO / "docs" / "handlers.md").read_text()
    blocks = [b for b in re.findall(r"```python\n(.*?)```", text, re.S) if "GradNormLogger" in b]
    assert len(blocks) == 2
    namespace: dict = {}
    for i, block in enumerate(blocks):  # one namespace: the test block uses the handler defined before it
        exec(compile(block, f"docs/handlers.md block {i + 1}", "exec"), namespace)
    assert namespace["GradNormLogger"].__name__ == "GradNormLogger" and "test_grad_norm_logger_emits_the_norm_every_n_steps" in namespace


def test_handlers_md_composed_loop_trains_logs_and_checkpoints(tmp_path, monkeypatch):
    text = (REPO / "docs" / "handlers.md").read_text()
    (code,) = [b for b in re.findall(r"```python\n(.*?)```", text, re.S) if "DataOrder(sampler" in b]
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "docs/handlers.md", "exec"), {})
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    validation = [r for r in records if r["phase"] == "validation"]
    assert [r["epoch"] for r in validation] == [1, 2, 3] and validation[-1]["accuracy"] > 0.9
    assert any(r["phase"] == "batch" for r in records)
    assert {p.name for p in (tmp_path / "checkpoints").glob("checkpoint_*.pt")} == {"checkpoint_46.pt", "checkpoint_69.pt"}


def test_api_md_example_runs_and_prints_what_it_says(capsys):
    text = (REPO / "docs" / "api.md").read_text()
    (block,) = [b for b in re.findall(r"```python\n(.*?)```", text, re.S) if "fit(" in b and "UpdateCounter" in b]
    exec(compile(block, "docs/api.md", "exec"), {})
    printed = capsys.readouterr().out.strip().splitlines()[-1]
    assert printed == "completed 4 32 True" and f"prints `{printed}`" in text


def test_api_md_dataset_of_mappings_example_runs_and_prints_what_it_says(capsys):
    text = (REPO / "docs" / "api.md").read_text()
    (block,) = [b for b in re.findall(r"```python\n(.*?)```", text, re.S) if "target_key=" in b and "import" in b]
    exec(compile(block, "docs/api.md", "exec"), {})
    printed = capsys.readouterr().out.strip().splitlines()[-1]
    assert printed == "True" and f"prints `{printed}`" in text


def test_cli_md_task_and_metrics_example_runs(tmp_path, monkeypatch, capsys):
    from flint.recipes.app.cli import main

    text = (REPO / "docs" / "cli.md").read_text()
    (recipe,) = [b for b in re.findall(r"```python\n(.*?)```", text, re.S) if b.startswith("# logit_recipe.py")]
    (commands,) = [b for b in re.findall(r"```bash\n(.*?)```", text, re.S) if "logit_recipe.py" in b]
    monkeypatch.chdir(tmp_path)
    (tmp_path / "logit_recipe.py").write_text(recipe)
    for line in commands.strip().splitlines():
        assert main(shlex.split(line)[1:]) == 0, line
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["roc_auc"] > 0.9 and 0 < result["f1"] <= 1
    assert json.loads((tmp_path / "runs" / "logit" / "config.json").read_text())["task"] == "binary"


def test_api_md_fine_tuning_example_runs_and_prints_what_it_says(capsys):
    text = (REPO / "docs" / "api.md").read_text()
    (block,) = [b for b in re.findall(r"```python\n(.*?)```", text, re.S) if "init_from=" in b]
    exec(compile(block, "docs/api.md", "exec"), {})
    printed = capsys.readouterr().out.strip().splitlines()[-1]
    assert printed == "['accuracy', 'epoch', 'loss', 'val_accuracy', 'val_loss'] torch.Size([3, 2])" and f"prints `{printed}`" in text
