"""gateway.ids: cheap ids, unique within a process and across processes (issue 7)."""

from __future__ import annotations

import subprocess
import sys

from gateway.ids import new_id


def test_ids_are_unique_and_shaped_like_uuid_hex():
    ids = [new_id() for _ in range(10000)]
    assert len(set(ids)) == len(ids)
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids)


def test_another_process_draws_other_ids():
    """Archive ids are stored under a UNIQUE constraint: a restarted gateway must not repeat them."""
    code = "from gateway.ids import new_id; print(new_id())"
    others = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
              for _ in range(2)}
    assert len(others) == 2 and new_id() not in others
