"""The pure pieces of the benchmark harness: ratios, targets, the Markdown tables, percentiles,
profile summaries and the generated gateway configuration. The benchmark itself never runs here."""

from __future__ import annotations

import tomllib
from pathlib import Path

from bench import report
from bench.__main__ import _frame_name, best_of_rounds, expand, parse_args, top_frames
from bench.gateways import Ours
from bench.phases import percentile
from gateway.config import parse_config


def test_lookup_follows_the_path_and_refuses_non_numbers() -> None:
    """A missing step, a skipped phase or a boolean is "no value", never a crash or a 1.0."""
    data = {"x2i_off": {"gateway_cpu_us_per_msg": 190, "complete": True}, "x2i_on": {"skipped": "no"}}
    assert report.lookup(data, ("x2i_off", "gateway_cpu_us_per_msg")) == 190.0
    assert report.lookup(data, ("x2i_on", "gateway_cpu_us_per_msg")) is None
    assert report.lookup(data, ("x2i_off", "complete")) is None
    assert report.lookup(data, ("nothing", "here")) is None


def test_ratio_is_ours_over_biboumi_and_undefined_without_both() -> None:
    """The ratio divides ours by Biboumi's; a missing or zero denominator gives no ratio."""
    assert report.ratio(50.0, 200.0) == 0.25
    assert report.ratio(None, 200.0) is None
    assert report.ratio(50.0, None) is None
    assert report.ratio(50.0, 0.0) is None


def test_targets_are_bounds_on_the_ratio() -> None:
    """Costs must stay under their bound, throughput over it; no target means no verdict."""
    assert report.meets(0.5, "<= 0.5") is True
    assert report.meets(0.51, "<= 0.5") is False
    assert report.meets(1.2, ">= 1.0") is True
    assert report.meets(0.9, ">= 1.0") is False
    assert report.meets(None, "<= 2.0") is None
    assert report.meets(3.0, "") is None


def test_table_renders_values_ratio_and_verdict() -> None:
    """A row shows both values, the ratio, the target with ≤/≥ and whether it is met; n/a otherwise."""
    rows = (report.Row("cpu", ("x", "cpu"), "µs", "<= 0.5"), report.Row("rate", ("x", "rate"), "msg/s", ">= 1.0"),
            report.Row("p50", ("y", "p50"), "ms"))
    text = report.table({"x": {"cpu": 90.0, "rate": 3000}}, {"x": {"cpu": 180.0, "rate": 4000}}, rows)
    lines = text.splitlines()
    assert lines[0].startswith("| metric | unit | ours | Biboumi | ours/Biboumi |")
    assert lines[2] == "| cpu | µs | 90.0 | 180 | 0.50 | ≤ 0.5 | yes |"
    assert lines[3] == "| rate | msg/s | 3000 | 4000 | 0.75 | ≥ 1.0 | **no** |"
    assert lines[4] == "| p50 | ms | n/a | n/a | n/a |  |  |"


def test_cpu_table_lists_each_process_per_phase() -> None:
    """Who used the CPU: cores per process, the whole machine and the other tenants' seconds."""
    text = report.cpu_table({"ours / x2i_off": {
        "wall_s": 2.5, "cores": {"gateway": 0.55, "prosody": 0.47, "ngircd": 0.01, "bench": 0.06},
        "machine_cores": 1.9, "other_cpu_s": 2.0}})
    assert text.splitlines()[2] == "| ours / x2i_off | 2.50 | 0.55 | 0.47 | 0.010 | 0.060 | 1.90 | 2.00 |"


def test_percentile_is_nearest_rank() -> None:
    """p50 and p99 of 1..100 are 50 and 99; a single value is every percentile."""
    values = [float(v) for v in range(100, 0, -1)]
    assert percentile(values, 0.5) == 50.0
    assert percentile(values, 0.99) == 99.0
    assert percentile([7.0], 0.99) == 7.0


def test_profile_summary_merges_lines_of_one_function(tmp_path: Path) -> None:
    """py-spy's collapsed stacks become self and inclusive shares per function (lines merged)."""
    assert _frame_name("dispatch (gateway/router.py:120)") == "dispatch router.py"
    stacks = tmp_path / "stacks.txt"
    stacks.write_text("run (a/main.py:1);dispatch (gateway/router.py:120) 3\n"
                      "run (a/main.py:1);dispatch (gateway/router.py:130) 1\n"
                      "run (a/main.py:2) 4\n")
    summary = top_frames(stacks)
    assert summary["samples"] == 8
    assert summary["self_pct"] == {"dispatch router.py": 50.0, "run main.py": 50.0}
    assert summary["inclusive_pct"]["run main.py"] == 100.0


def test_generated_gateway_config_is_valid(tmp_path: Path) -> None:
    """The bench's configuration of our gateway passes the gateway's own validation."""
    ours = Ours("ours", tmp_path, component_port=5347, secret="s3cret", irc_port=6667)
    text = ours.config_text(None)
    config = parse_config(tomllib.loads(text), "bench.toml")
    assert config.gateways[0].jid == "irc.localhost"
    assert "[gateways.irc.archive]" not in text
    assert "enabled = false" in ours.config_text(False)


def test_best_of_rounds_takes_the_least_disturbed_figures() -> None:
    """CPU per message from the cheapest round, throughput the highest seen, every round kept."""
    result = {"rounds": {
        "x2i_off": [{"gateway_cpu_us_per_msg": 179.0, "msgs_per_s": 2197.0},
                    {"gateway_cpu_us_per_msg": 113.0, "msgs_per_s": 7000.0},
                    {"gateway_cpu_us_per_msg": 120.0, "msgs_per_s": 7871.0}],
        "latency": [{"x2i_ms": {"p50": 2.0}, "i2x_ms": {"p50": 1.4}},
                    {"x2i_ms": {"p50": 1.3}, "i2x_ms": {"p50": 1.2}}],
    }}
    best_of_rounds(result)
    assert result["x2i_off"]["gateway_cpu_us_per_msg"] == 113.0
    assert result["x2i_off"]["msgs_per_s"] == 7871.0
    assert result["x2i_off"]["rounds_cpu_us_per_msg"] == [179.0, 113.0, 120.0]
    assert result["latency"]["x2i_ms"]["p50"] == 1.3


def test_message_rounds_alternate_and_joins_go_one_k_at_a_time() -> None:
    """Rounds interleave the archive settings; each K of the big channel is its own group."""
    args = parse_args(["--rounds", "2", "--join-k", "500,1000", "--groups", "msg_on,msg_off,join,storm"])
    assert expand(args) == ["msg_on", "msg_off", "msg_on", "msg_off",
                            "join:join_first:500", "join:join_last:1000", "storm"]
