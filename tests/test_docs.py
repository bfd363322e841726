"""The code in docs/handlers.md runs as written: the custom handler, its test, the handler-test pattern."""

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
