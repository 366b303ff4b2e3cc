"""The comparison table: pure functions from the results dictionary to Markdown.

Each row picks one figure for both gateways by a path into ``results[gateway]``, and the ratio
is ours ÷ Biboumi. Targets are the issue's goals, on the ratio; a target is "≤" for costs and
"≥" for throughput.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Row:
    label: str
    path: tuple[str, ...]
    unit: str
    target: str = ""
    """``"<= 0.5"`` or ``">= 1.0"``: the goal for the ratio ours/Biboumi; empty if none."""


ROWS = (
    Row("CPU per msg XMPP→IRC, archive on", ("x2i_on", "gateway_cpu_us_per_msg"), "µs", "<= 0.5"),
    Row("CPU per msg IRC→XMPP, archive on", ("i2x_on", "gateway_cpu_us_per_msg"), "µs", "<= 0.5"),
    Row("CPU per msg XMPP→IRC, archive off", ("x2i_off", "gateway_cpu_us_per_msg"), "µs", "<= 2.0"),
    Row("CPU per msg IRC→XMPP, archive off", ("i2x_off", "gateway_cpu_us_per_msg"), "µs", "<= 2.0"),
    Row("throughput XMPP→IRC, archive on", ("x2i_on", "msgs_per_s"), "msg/s", ">= 1.0"),
    Row("throughput IRC→XMPP, archive on", ("i2x_on", "msgs_per_s"), "msg/s", ">= 1.0"),
    Row("throughput XMPP→IRC, archive off", ("x2i_off", "msgs_per_s"), "msg/s", ">= 1.0"),
    Row("throughput IRC→XMPP, archive off", ("i2x_off", "msgs_per_s"), "msg/s", ">= 1.0"),
    Row("paced latency XMPP→IRC p50", ("latency", "x2i_ms", "p50"), "ms"),
    Row("paced latency XMPP→IRC p99", ("latency", "x2i_ms", "p99"), "ms"),
    Row("paced latency IRC→XMPP p50", ("latency", "i2x_ms", "p50"), "ms"),
    Row("paced latency IRC→XMPP p99", ("latency", "i2x_ms", "p99"), "ms"),
    Row("RSS per session, first step", ("sessions", "first", "rss_per_session_kb"), "kB", "<= 2.0"),
    Row("RSS per session, last step", ("sessions", "last", "rss_per_session_kb"), "kB", "<= 2.0"),
    Row("gateway CPU per session join, last step", ("sessions", "last", "gateway_cpu_ms_per_join"), "ms"),
    Row("idle CPU holding all sessions", ("sessions", "idle", "gateway_cores"), "cores", "<= 0.1"),
    Row("join K=first, warm (median)", ("join_first", "warm_median_ms"), "ms"),
    Row("join K=first, cold", ("join_first", "cold", "ms"), "ms"),
    Row("join K=last, warm (median)", ("join_last", "warm_median_ms"), "ms", "<= 1.0"),
    Row("join K=last, cold", ("join_last", "cold", "ms"), "ms"),
    Row("log-in storm: all in their rooms", ("storm", "all_in_s"), "s"),
)


def lookup(results: Mapping[str, Any], path: tuple[str, ...]) -> float | None:
    """The number at ``path``, or None when a step is missing or the value is not a number."""
    node: Any = results
    for key in path:
        if not isinstance(node, Mapping) or key not in node:
            return None
        node = node[key]
    if isinstance(node, bool) or not isinstance(node, int | float):
        return None
    return float(node)


def ratio(ours: float | None, theirs: float | None) -> float | None:
    if ours is None or theirs is None or theirs == 0:
        return None
    return ours / theirs


def meets(value: float | None, target: str) -> bool | None:
    """Whether a ratio meets ``"<= x"`` / ``">= x"``; None without a ratio or a target."""
    if value is None or not target:
        return None
    operator, bound = target.split()
    return value <= float(bound) if operator == "<=" else value >= float(bound)


def fmt(value: float | None) -> str:
    if value is None:
        return "n/a"
    if value == 0:
        return "0"
    magnitude = abs(value)
    if magnitude >= 100:
        return f"{value:.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    if magnitude >= 0.1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def table(ours: Mapping[str, Any], biboumi: Mapping[str, Any], rows: tuple[Row, ...] = ROWS) -> str:
    """The Markdown table of every row: both values, the ratio, the target and whether it is met."""
    lines = ["| metric | unit | ours | Biboumi | ours/Biboumi | target | met |",
             "|---|---|---|---|---|---|---|"]
    for row in rows:
        a, b = lookup(ours, row.path), lookup(biboumi, row.path)
        r = ratio(a, b)
        ok = meets(r, row.target)
        met = "" if ok is None else ("yes" if ok else "**no**")
        target = row.target.replace("<=", "≤").replace(">=", "≥")
        lines.append(f"| {row.label} | {row.unit} | {fmt(a)} | {fmt(b)} | {fmt(r)} | {target} | {met} |")
    return "\n".join(lines) + "\n"


def cpu_table(phases: Mapping[str, Mapping[str, Any]]) -> str:
    """Which process used the CPU in each phase: cores per process, the machine, other tenants."""
    lines = ["| gateway / phase | wall s | gateway | prosody | ngircd | bench | machine "
             "| other tenants (s) |",
             "|---|---|---|---|---|---|---|---|"]
    for name, summary in phases.items():
        cores = summary.get("cores", {})
        cells = [fmt(cores.get(key)) for key in ("gateway", "prosody", "ngircd", "bench")]
        lines.append(f"| {name} | {fmt(summary.get('wall_s'))} | " + " | ".join(cells)
                     + f" | {fmt(summary.get('machine_cores'))} | {fmt(summary.get('other_cpu_s'))} |")
    return "\n".join(lines) + "\n"
