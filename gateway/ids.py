"""Cheap unique ids for stanzas and archive rows (issue 7).

``uuid4()`` reads ``os.urandom`` on every call, which was 9-11 % of the gateway's CPU per
relayed message. These ids draw 80 random bits once per process and count from there: unique
across restarts and processes (a collision needs two processes to draw the same 80 bits),
32 hexadecimal characters like ``uuid4().hex``. They are not secrets: nothing may rely on
them being unguessable (the router's own iq ids keep ``uuid4`` for that reason).
"""

from __future__ import annotations

import itertools
import os

_PREFIX = os.urandom(10).hex()
_COUNTER = itertools.count()


def new_id() -> str:
    """A new id, unique across this and every other gateway process (``next`` on an
    ``itertools.count`` is atomic under the GIL, so the archive's threads may call it too)."""
    return f"{_PREFIX}{next(_COUNTER):012x}"
