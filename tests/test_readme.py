"""The README's Python snippets run as written."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)


def test_readme_has_python_snippets() -> None:
    assert len(BLOCKS) >= 2


@pytest.mark.parametrize("block", BLOCKS, ids=[f"snippet{i}" for i in range(len(BLOCKS))])
def test_snippet_runs(block: str, tmp_path: Path) -> None:
    script = tmp_path / "snippet.py"
    script.write_text(block)
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


def test_api_snippet_prints_results(tmp_path: Path) -> None:
    block = next(b for b in BLOCKS if "batchyard.run(" in b)
    (tmp_path / "s.py").write_text(block)
    out = subprocess.run([sys.executable, "s.py"], cwd=tmp_path, capture_output=True, text=True, timeout=60).stdout
    lines = out.splitlines()
    assert lines[0] == "completed"
    assert "1 succeeded {'word': 'apple', 'length': 5}" in lines
    assert len(lines) == 4
