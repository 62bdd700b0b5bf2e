"""Run the ``batchyard`` command as if on another machine: ``python as_machine.py HOSTNAME worker ...``.

A store tells a dead worker on its own host by its pid, at once; on another host only the lease can tell.
Several hostnames on one machine make the multi-worker tests take the path that several machines take.
"""

from __future__ import annotations

import socket
import sys

if __name__ == "__main__":
    host = sys.argv.pop(1)
    socket.gethostname = lambda: host  # read by the store (liveness by pid) and the worker's default name
    from batchyard.cli.main import main

    sys.argv[0] = "batchyard"
    main()
