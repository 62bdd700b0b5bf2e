"""Batch mode from the environment: every option of ``batchyard run`` (and validate) from ``BATCHYARD_*``."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from _support import BIN


def batchyard(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("BATCHYARD_")}
    return subprocess.run([str(BIN), *args], cwd=cwd, env={**clean, **env}, capture_output=True, text=True,
                          timeout=60)


def test_run_takes_every_option_from_the_environment(tmp_path: Path, procs_file: Path) -> None:
    (tmp_path / "words.txt").write_text("apple\nkiwi\nbanana\n")
    other = tmp_path / "other_processors.py"
    other.write_text("import batchyard\n\n\n@batchyard.processor('shout')\ndef shout(item, ctx):\n"
                     "    return {'text': item.payload.upper() + item.params['mark']}\n")
    env = {"BATCHYARD_INPUT": "words.txt", "BATCHYARD_PROCESSOR": "shout",
           "BATCHYARD_PROCESSORS": f"{procs_file}{os.pathsep}{other}", "BATCHYARD_PARAMS": '{"mark": "!"}',
           "BATCHYARD_PARALLEL": "2", "BATCHYARD_PRIORITY": "high", "BATCHYARD_OUTPUT": "out.csv",
           "BATCHYARD_FORMAT": "json", "BATCHYARD_STORE": str(tmp_path / "s.db"), "BATCHYARD_TAGS": "env nightly",
           "BATCHYARD_DESCRIPTION": "from the environment", "BATCHYARD_MAX_FAILURES": "0",
           "BATCHYARD_MANIFEST": "manifest.json"}
    done = batchyard(["run"], tmp_path, **env)
    assert done.returncode == 0, done.stderr
    results = json.loads((tmp_path / "out.csv").read_text())  # BATCHYARD_FORMAT=json beat the extension
    assert sorted(r["result"]["text"] for r in results["results"]) == ["APPLE!", "BANANA!", "KIWI!"]
    assert json.loads((tmp_path / "manifest.json").read_text())["batch_id"] == results["batch_id"]
    shown = json.loads(batchyard(["status", results["batch_id"], "--json"], tmp_path, **env).stdout)
    assert (shown["priority"], shown["parallel"], shown["tags"], shown["description"]) == \
        ("high", 2, ["env", "nightly"], "from the environment")
    assert shown["failure_policy"]["max_failures"] == 0
    # --param on the command line overrides BATCHYARD_PARAMS's keys; a new batch since the params differ
    done = batchyard(["run", "--param", "mark=?"], tmp_path, **env)
    assert done.returncode == 0 and "created" in done.stderr
    assert "APPLE?" in (tmp_path / "out.csv").read_text()


def test_dry_run_and_validate_from_the_environment(tmp_path: Path, procs_file: Path) -> None:
    (tmp_path / "nums.txt").write_text("1\n2\n3\n")
    env = {"BATCHYARD_INPUT": "nums.txt", "BATCHYARD_PROCESSOR": "record", "BATCHYARD_PROCESSORS": str(procs_file),
           "BATCHYARD_DRY_RUN": "true", "BATCHYARD_STORE": str(tmp_path / "s.db")}
    done = batchyard(["run"], tmp_path, **env)
    assert done.returncode == 0 and "dry run: 3 items" in done.stdout and not (tmp_path / "s.db").exists()
    done = batchyard(["validate"], tmp_path, **env)
    assert done.returncode == 0 and "3 items" in done.stdout
    done = batchyard(["run"], tmp_path, **{**env, "BATCHYARD_PARAMS": "[1]"})
    assert done.returncode == 2 and "BATCHYARD_PARAMS" in done.stderr and "expected a JSON object" in done.stderr
    done = batchyard(["run"], tmp_path, BATCHYARD_PROCESSOR="noop")
    assert done.returncode == 2 and "Missing argument" in done.stderr
