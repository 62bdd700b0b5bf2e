"""Options of the commands that run workers (``run``, ``worker``): thresholds past which they stop claiming.

See ``core.throttle``. Each option has its ``BATCHYARD_*`` variable; ``batchyard serve`` reads the variables for
its embedded worker. ``--thresholds-file`` names a JSON object of the same names (``{"max_memory_percent": 85}``)
re-read whenever it changes, over the options, so a running worker can be tightened or relaxed in place.
"""

from __future__ import annotations

from typing import Annotated

import typer

from batchyard.core.throttle import ENV, FILE_ENV, Thresholds, Throttle

MaxMemoryOpt = Annotated[float | None, typer.Option(
    "--max-memory-percent", envvar=ENV["max_memory_percent"], min=0.0, max=100.0,
    help="Claim no new items while the machine's memory in use is above this percentage.")]
MinDiskOpt = Annotated[float | None, typer.Option(
    "--min-disk-free-gb", envvar=ENV["min_disk_free_gb"], min=0.0,
    help="Claim no new items while free space on --disk-path is below this many GB.")]
DiskPathOpt = Annotated[str | None, typer.Option(
    "--disk-path", envvar=ENV["disk_path"], help="Where outputs go, for --min-disk-free-gb (default: here).")]
MaxCpuOpt = Annotated[float | None, typer.Option(
    "--max-cpu-percent", envvar=ENV["max_cpu_percent"], min=0.0, max=100.0,
    help="Claim no new items while CPU use (all cores, over a second) is above this percentage.")]
ThresholdsFileOpt = Annotated[str | None, typer.Option(
    "--thresholds-file", envvar=FILE_ENV,
    help="JSON object of thresholds (max_memory_percent, min_disk_free_gb, disk_path, max_cpu_percent), re-read "
         "when it changes.")]


def throttle_from(max_memory_percent: float | None, min_disk_free_gb: float | None, disk_path: str | None,
                  max_cpu_percent: float | None, thresholds_file: str | None,
                  default_disk: str = ".") -> Throttle | None:
    t = Thresholds(max_memory_percent=max_memory_percent, min_disk_free_gb=min_disk_free_gb,
                   disk_path=disk_path or default_disk, max_cpu_percent=max_cpu_percent)
    return Throttle(t, thresholds_file) if t.active or thresholds_file else None
