"""The /proc meters of the benchmark harness: CPU and RSS of a process, and a phase's summary."""

from __future__ import annotations

import os

from bench.proc import Meter, cpu_seconds, machine_busy_seconds, rss_bytes


def test_own_process_has_cpu_and_memory() -> None:
    """This test process has used some CPU and holds some memory; a missing PID reads as zero."""
    assert cpu_seconds(os.getpid()) > 0
    assert rss_bytes(os.getpid()) > 1 << 20
    assert machine_busy_seconds() > 0
    assert cpu_seconds(2**22 + 1) == 0.0  # above the kernel's pid_max default
    assert rss_bytes(2**22 + 1) == 0


def test_summary_splits_the_machine_between_processes_and_other_tenants() -> None:
    """Cores are CPU over wall time; what the machine used beyond our processes is the others'."""
    meter = Meter({"gateway": 1, "prosody": 2})
    meter.wall_s, meter.machine_s = 2.0, 3.0
    meter.cpu_s = {"gateway": 1.0, "prosody": 0.5}
    summary = meter.summary()
    assert summary["cores"] == {"gateway": 0.5, "prosody": 0.25}
    assert summary["machine_cores"] == 1.5
    assert summary["other_cpu_s"] == 1.5
