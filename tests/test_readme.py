"""The README's Python example runs as written, and its commands are the ones CI runs."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_readme_python_example_runs(capsys) -> None:
    blocks = re.findall(r"```python\n(.*?)```", README, flags=re.S)
    assert blocks, "README.md has no python example"
    for block in blocks:
        exec(compile(block, "README.md", "exec"), {"__name__": "readme_example"})
    out = capsys.readouterr().out
    assert "step 2:" in out


def test_ci_runs_the_readme_commands() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    bash_blocks = re.findall(r"```bash\n(.*?)```", README, flags=re.S)
    commands = [line.strip() for block in bash_blocks for line in block.splitlines() if line.strip()]
    for cmd in commands:
        if cmd.startswith(("python3 -m venv", "pip install")):
            continue  # CI builds its own fresh environment with the same pinned torch
        assert cmd in ci, f"README command not run by CI: {cmd}"
    assert "torch==2.13.0" in ci
