"""`batchyard worker` with thresholds: past one it claims nothing and `batchyard status` says why; raised (the
thresholds file is re-read), it runs the batch to the end."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

from _support import BIN, cli, cli_env, wait_for

from batchyard.core.models import BatchSpec, NewItem
from batchyard.store.sqlite import SQLiteStore


def test_worker_throttled_by_memory_then_raised(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    store = SQLiteStore(db)
    info = store.create_batch(BatchSpec(processor="sleep", params={"ms": 5}), [NewItem(payload=i) for i in range(30)])
    thresholds = tmp_path / "thresholds.json"
    thresholds.write_text(json.dumps({"max_memory_percent": 0.01}))
    worker = subprocess.Popen([str(BIN), "worker", "--store", str(db), "--thresholds-file", str(thresholds),
                               "--max-cpu-percent", "100", "--log-level", "warning"],
                              env=cli_env(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=open(tmp_path / "worker.log", "w"), start_new_session=True)  # noqa: SIM115
    try:
        wait_for(lambda: store.get_batch(info.batch_id).throttled, timeout=20, what="the throttle note")
        status = cli("status", info.batch_id, "--store", db)
        assert "  throttled: memory " in status.stdout and "% > 0.01%" in status.stdout, status.stdout
        assert store.get_batch(info.batch_id).items_succeeded == 0
        as_json = json.loads(cli("status", info.batch_id, "--json", "--store", db).stdout)
        assert as_json["throttled"].startswith("throttled: memory ")
        thresholds.write_text(json.dumps({"max_memory_percent": 100}))
        done = wait_for(lambda: (b := store.get_batch(info.batch_id)).is_final and b, timeout=30,
                        what="the batch to run once under the thresholds")
        assert done.status == "completed" and done.items_succeeded == 30
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(20)
        store.close()
    assert "stops claiming: throttled: memory" in (tmp_path / "worker.log").read_text()
