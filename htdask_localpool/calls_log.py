"""One line per condor_* invocation in $LOCALPOOL_DIR/calls.log (benchmarks count schedd calls).

Line: ``<epoch float>\\t<command name>\\t<json list of argv[1:]>\\t<pid>``; written with O_APPEND in a
single write() so lines of concurrent processes never interleave. The pid lets a test find the processes its
own pool started (tests/test_workers_integration.py) without looking at anybody else's.
"""
from __future__ import annotations

import json
import logging
import os
import time

from htdask_localpool import paths

log = logging.getLogger(__name__)


def record(command: str, args: list[str]) -> None:
    """Append the call line; never raises (a command must work even if logging fails)."""
    try:
        files = paths.PoolFiles(paths.ensure_pool_dir())
        line = f"{time.time():.6f}\t{command}\t{json.dumps(list(args))}\t{os.getpid()}\n".encode()
        fd = paths.open_shared(files.calls, os.O_WRONLY | os.O_APPEND)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)
    except OSError as exc:  # pragma: no cover - e.g. unwritable pool dir
        log.debug("calls.log not written: %s", exc)
