"""``xmpp-gateway`` with ``tracemalloc`` on, for the memory profile of ``python -m bench --profile``.

SIGUSR1 writes a snapshot to ``$BENCH_TRACEMALLOC_DIR/snapshot-N.pickle`` and then an empty
``snapshot-N.done`` marker, so the bench can diff the allocations made by N sessions line by line.
Only the bench uses this: the gateway's code is untouched, and tracemalloc slows it down, so the
measured phases never run under it.
"""

from __future__ import annotations

import itertools
import os
import signal
import sys
import tracemalloc
from pathlib import Path
from types import FrameType

_count = itertools.count()


def _snapshot(signum: int, frame: FrameType | None) -> None:
    directory = Path(os.environ["BENCH_TRACEMALLOC_DIR"])
    n = next(_count)
    tracemalloc.take_snapshot().dump(str(directory / f"snapshot-{n}.pickle"))
    (directory / f"snapshot-{n}.done").touch()


def main() -> int:
    tracemalloc.start(1)
    signal.signal(signal.SIGUSR1, _snapshot)
    from gateway.cli import main as gateway_main

    return gateway_main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
