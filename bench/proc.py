"""CPU and memory of processes from ``/proc``: the cost figures never come from wall clocks.

``/proc/<pid>/stat`` fields 14 and 15 (utime, stime) are in clock ticks and cover all the
threads of the process (the gateway's database thread pool included). ``/proc/stat``'s first
line gives the whole machine, so a phase can say how much CPU other tenants took meanwhile.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU of ``pid`` (all its threads), in seconds; 0 if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            raw = fh.read()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    # The command name (field 2) may hold spaces and parentheses: split after the last ')'.
    fields = raw[raw.rindex(b")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def rss_bytes(pid: int) -> int:
    """Resident set size of ``pid`` (VmRSS), in bytes; 0 if it is gone."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except FileNotFoundError:
        pass
    return 0


def machine_busy_seconds() -> float:
    """CPU seconds all cores spent not idle since boot (``/proc/stat``, idle and iowait excluded)."""
    with open("/proc/stat") as fh:
        values = [int(v) for v in fh.readline().split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    # guest and guest_nice (fields 9, 10) are already counted in user and nice.
    return (sum(values[:8]) - idle) / TICKS


@dataclass
class Meter:
    """CPU used by named processes (and the whole machine) between :meth:`start` and :meth:`stop`."""

    pids: Mapping[str, int]
    wall_s: float = 0.0
    cpu_s: dict[str, float] = field(default_factory=dict)
    machine_s: float = 0.0
    _t0: float = 0.0
    _cpu0: dict[str, float] = field(default_factory=dict)
    _machine0: float = 0.0

    def start(self) -> Meter:
        self._t0 = time.monotonic()
        self._cpu0 = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        self._machine0 = machine_busy_seconds()
        return self

    def stop(self) -> Meter:
        self.wall_s = time.monotonic() - self._t0
        self.cpu_s = {name: cpu_seconds(pid) - self._cpu0[name] for name, pid in self.pids.items()}
        self.machine_s = machine_busy_seconds() - self._machine0
        return self

    def summary(self) -> dict[str, object]:
        """Wall time, CPU seconds and cores per process, the machine, and everybody else."""
        wall = max(self.wall_s, 1e-9)
        ours = sum(self.cpu_s.values())
        return {
            "wall_s": round(self.wall_s, 3),
            "cpu_s": {name: round(value, 3) for name, value in self.cpu_s.items()},
            "cores": {name: round(value / wall, 3) for name, value in self.cpu_s.items()},
            "machine_cores": round(self.machine_s / wall, 3),
            # Other tenants of this shared machine (other helpers' tests): the noise.
            "other_cpu_s": round(max(self.machine_s - ours, 0.0), 3),
        }
