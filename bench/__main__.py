"""``python -m bench``: our gateway beside Biboumi, same Prosody, same ngircd, same clients.

Starts a private Prosody and ngircd on 127.0.0.1, then runs each group of phases against a
fresh process of each gateway in turn (ours, then Biboumi, group after group, so that both see
the machine in the same state), and writes ``results.json`` and ``results.md``.
See docs/performance.md for the method.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import platform
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from bench import phases, report
from bench.gateways import COMPONENT, Biboumi, Gateway, Ours
from bench.servers import BenchProsody, start_ngircd
from gateway.prosody import ComponentSpec

GROUPS = ("msg_on", "msg_off", "join", "sessions", "storm")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run (about 2 minutes)")
    parser.add_argument("--messages", type=int, default=10000, help="messages each way per throughput phase")
    parser.add_argument("--window", type=int, default=1000, help="messages in flight at most")
    parser.add_argument("--latency-messages", type=int, default=200)
    parser.add_argument("--latency-rate", type=float, default=50.0, help="messages per second")
    parser.add_argument("--sessions", default="200,1000", help="session counts (steps), comma-separated")
    parser.add_argument("--idle", type=float, default=10.0, help="seconds of idle measurement")
    parser.add_argument("--join-k", default="500,1000", help="occupant counts of the big channel")
    parser.add_argument("--join-reps", type=int, default=3, help="warm joins per K")
    parser.add_argument("--storm", type=int, default=200, help="users logging on at once")
    parser.add_argument("--groups", default=",".join(GROUPS), help=f"subset of {','.join(GROUPS)}")
    parser.add_argument("--rounds", type=int, default=None,
                        help="rounds of the message groups, alternating gateways, the best one reported "
                             "(default: 3, 1 with --quick)")
    parser.add_argument("--gateways", default="ours,biboumi")
    parser.add_argument("--profile", action=argparse.BooleanOptionalAction, default=None,
                        help="profile ours (py-spy and tracemalloc) after the measured phases "
                             "(default: on, off with --quick)")
    parser.add_argument("--out", type=Path, default=Path("bench-results"), help="output directory")
    args = parser.parse_args(argv)
    if args.quick:
        args.messages, args.window, args.latency_messages = 1000, 200, 50
        args.sessions, args.idle, args.join_k, args.join_reps, args.storm = "20,50", 3.0, "50,100", 2, 20
    if args.rounds is None:
        args.rounds = 1 if args.quick else 3
    if args.profile is None:
        args.profile = not args.quick
    args.session_steps = [int(v) for v in args.sessions.split(",")]
    args.join_ks = [int(v) for v in args.join_k.split(",")]
    args.group_list = [g for g in args.groups.split(",") if g]
    unknown = set(args.group_list) - set(GROUPS)
    if unknown:
        parser.error(f"unknown groups: {sorted(unknown)}")
    return args


def run_dir() -> Path:
    # Databases on tmpfs, as in the Biboumi baseline: the figures are CPU, not disk.
    base = "/dev/shm" if os.path.isdir("/dev/shm") else None
    return Path(tempfile.mkdtemp(prefix="xgw-bench-", dir=base))


async def run_group(group: str, ctx: phases.Context, args: argparse.Namespace,
                    result: dict[str, Any], archive_switch: bool) -> None:
    gw = ctx.gateway
    if group in ("msg_on", "msg_off"):
        archive = group == "msg_on"
        suffix = "on" if archive else "off"
        if archive and not archive_switch:
            skipped = {"skipped": "no archive switch on this branch"}
            result[f"x2i_{suffix}"] = result[f"i2x_{suffix}"] = skipped
            return
        rounds = result.setdefault("rounds", {})
        await start(ctx, archive)
        pair = await phases.message_pair(ctx, archive)
        try:
            rounds.setdefault(f"x2i_{suffix}", []).append(
                await phases.xmpp_to_irc(ctx, pair, args.messages, args.window))
            await asyncio.sleep(1.0)
            rounds.setdefault(f"i2x_{suffix}", []).append(
                await phases.irc_to_xmpp(ctx, pair, args.messages, args.window))
            if not archive:
                await asyncio.sleep(1.0)
                rounds.setdefault("latency", []).append(
                    await phases.paced_latency(ctx, pair, args.latency_messages, args.latency_rate))
        finally:
            await phases.close_pair(pair)
    elif group.startswith("join:"):
        # One K at a time for both gateways: the IRC occupants are shared and only grow.
        position, k = group.split(":")[1:]
        await start(ctx, True)
        result[position] = await phases.big_join(ctx, int(k), args.join_reps)
    elif group == "sessions":
        await start(ctx, True)
        raw = await phases.sessions(ctx, args.session_steps, args.idle)
        steps = raw["steps"]
        result["sessions"] = {"first": steps[str(args.session_steps[0])],
                              "last": steps[str(args.session_steps[-1])], "idle": raw["idle"],
                              "rss_after_logout_mb": raw["rss_after_logout_mb"], "steps": steps}
    elif group == "storm":
        await start(ctx, True)
        result["storm"] = await phases.storm(ctx, args.storm)
    gw.stop()
    print(f"bench: {gw.name} {group} done", flush=True)


def best_of_rounds(result: dict[str, Any]) -> None:
    """Each message phase's figures from its rounds: the least disturbed one on a shared machine,
    i.e. the round with the least gateway CPU per message, with the highest throughput of all
    rounds; paced latency from the round with the lowest p50s. All rounds stay in ``rounds``."""
    for key, rounds in result.get("rounds", {}).items():
        done = [r for r in rounds if isinstance(r, dict)]
        if not done:
            continue
        if key == "latency":
            result[key] = min(done, key=lambda r: sum((r.get(d) or {}).get("p50", 1e9)
                                                      for d in ("x2i_ms", "i2x_ms")))
            continue
        best = dict(min(done, key=lambda r: r["gateway_cpu_us_per_msg"]))
        best["msgs_per_s"] = max(r["msgs_per_s"] or 0 for r in done)
        best["rounds_cpu_us_per_msg"] = [r["gateway_cpu_us_per_msg"] for r in done]
        best["rounds_msgs_per_s"] = [r["msgs_per_s"] for r in done]
        result[key] = best


def expand(args: argparse.Namespace) -> list[str]:
    """The groups to run, in order; ``join`` becomes one ``join:POSITION:K`` per occupant count."""
    groups: list[str] = []
    for group in args.group_list:
        if group == "join":
            positions = ("join_first", "join_last") if len(args.join_ks) > 1 else ("join_last",)
            groups += [f"join:{p}:{k}" for p, k in zip(positions, args.join_ks[-2:], strict=True)]
        elif group.startswith("msg_"):
            groups += [group] * args.rounds
        else:
            groups.append(group)
    # Message rounds interleaved (on, off, on, off...): both settings see the same moments of noise.
    messages = [g for g in groups if g.startswith("msg_")]
    interleaved = [messages[i] for r in range(args.rounds) for i in range(r, len(messages), args.rounds)]
    return interleaved + [g for g in groups if not g.startswith("msg_")]


async def start(ctx: phases.Context, archive: bool) -> None:
    ctx.gateway.start(archive)
    await phases.wait_ready(ctx)


async def profile_ours(ctx: phases.Context, args: argparse.Namespace, out: Path) -> dict[str, Any]:
    """Where ours spends its CPU and memory: the message phases and warm joins of the biggest channel
    sampled by py-spy (collapsed stacks, then the top functions), and the memory of the first
    session step diffed with tracemalloc. Separate from the measured phases (both slow it down)."""
    py_spy = Path(sys.executable).parent / "py-spy"
    if not py_spy.exists():
        return {"skipped": "py-spy is not installed (pip install -e '.[bench]')"}
    summaries: dict[str, Any] = {}

    async def sampled(name: str, work: Callable[[], Awaitable[Any]], rate: int = 250) -> None:
        stacks = out / f"profile-ours-{name}.txt"
        spy = subprocess.Popen([str(py_spy), "record", "--pid", str(ctx.gateway.pid), "--rate", str(rate),
                                "--format", "raw", "--output", str(stacks), "--nonblocking"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        await asyncio.sleep(1.0)
        await work()
        spy.send_signal(2)
        spy.wait(30)
        summaries[name] = {"stacks": str(stacks), **top_frames(stacks)}

    settings = [False, True] if ctx.gateway.supports_archive_switch() else [False]
    for archive in settings:
        suffix = "-archive" if archive else ""
        await start(ctx, archive)
        pair = await phases.message_pair(ctx, archive)
        try:
            for direction, run in (("x2i", phases.xmpp_to_irc), ("i2x", phases.irc_to_xmpp)):
                await sampled(f"{direction}{suffix}",
                              lambda run=run, pair=pair: run(ctx, pair, args.messages, args.window))
        finally:
            await phases.close_pair(pair)
    if ctx.occupants:
        k = len(ctx.occupants)
        user = await ctx.login(f"warm{args.join_ks[-1]}")
        await user.join(phases.room("#lobby"), "profiler")
        cold = await ctx.login(f"cold{args.join_ks[-1]}")
        # A cold join (a new IRC connection, occupants never seen by this process) at 1000 Hz.
        await sampled(f"cold-join-k{k}", lambda: cold.join(phases.room(phases.BIG_CHANNEL), "coldprof",
                                                            timeout=120), rate=1000)
        await cold.close()

        async def joins() -> None:
            for _ in range(5):
                await user.join(phases.room(phases.BIG_CHANNEL), "profiler", timeout=120)
                await user.leave(phases.room(phases.BIG_CHANNEL), "profiler")

        await sampled(f"join-k{k}", joins, rate=1000)
        await user.close()
    ctx.gateway.stop()
    summaries["memory"] = await memory_profile(ctx, args.session_steps[0])
    return summaries


async def memory_profile(ctx: phases.Context, sessions: int) -> dict[str, Any]:
    """tracemalloc's diff over ``sessions`` joins: bytes per session by source line and by file."""
    import tracemalloc

    gateway = ctx.gateway
    assert isinstance(gateway, Ours)
    gateway.traced = True
    try:
        await start(ctx, False)
        clients = [c for c in await phases.bounded(range(sessions), 50, lambda i: ctx.login(f"u{i:04d}"))
                   if not isinstance(c, BaseException)]

        async def snapshot(n: int) -> tracemalloc.Snapshot:
            gateway.process.send_signal(10)  # type: ignore[union-attr]
            done = gateway.directory / f"snapshot-{n}.done"
            while not done.exists():
                await asyncio.sleep(0.2)
            return tracemalloc.Snapshot.load(str(gateway.directory / f"snapshot-{n}.pickle"))

        before = await snapshot(0)
        await phases.bounded(clients, 10, lambda c: c.join(phases.room(f"#s{c.user}"), f"n{c.user}"))
        await asyncio.sleep(1.0)
        after = await snapshot(1)
        await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)
    finally:
        gateway.stop()
        gateway.traced = False
    n = max(len(clients), 1)

    def per_session(key: str) -> dict[str, float]:
        diffs = sorted(after.compare_to(before, key), key=lambda d: -d.size_diff)[:20]
        return {_short(str(d.traceback[0])): round(d.size_diff / n) for d in diffs}

    total = sum(d.size_diff for d in after.compare_to(before, "filename"))
    return {"sessions": len(clients), "traced_bytes_per_session": round(total / n),
            "bytes_per_session_by_line": per_session("lineno"),
            "bytes_per_session_by_file": per_session("filename")}


def top_frames(path: Path, count: int = 25) -> dict[str, Any]:
    """Self and inclusive sample shares per function from py-spy's collapsed stacks."""
    own: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    total = 0
    if not path.exists():
        return {"error": "no samples"}
    for line in path.read_text().splitlines():
        stack, _, samples = line.rpartition(" ")
        if not samples.isdigit():
            continue
        n = int(samples)
        total += n
        frames = [_frame_name(frame) for frame in stack.split(";") if frame]
        if frames:
            own[frames[-1]] = own.get(frames[-1], 0) + n
        for frame in set(frames):
            inclusive[frame] = inclusive.get(frame, 0) + n
    pct = (lambda v: round(100 * v / total, 1)) if total else (lambda v: 0.0)
    return {"samples": total,
            "self_pct": {k: pct(v) for k, v in sorted(own.items(), key=lambda kv: -kv[1])[:count]},
            "inclusive_pct": {k: pct(v) for k, v in sorted(inclusive.items(), key=lambda kv: -kv[1])[:count]}}


def _short(where: str) -> str:
    """A source location relative to the checkout or to site-packages."""
    root = str(Path(__file__).resolve().parent.parent) + "/"
    return where.replace(root, "").split("site-packages/")[-1].removesuffix(":0")


def _frame_name(frame: str) -> str:
    """``function (path/to/module.py:12)`` → ``function module.py``: lines merged per function."""
    function, _, where = frame.partition(" (")
    return f"{function} {where.rstrip(')').rsplit(':', 1)[0].split('/')[-1]}"


def versions() -> dict[str, str]:
    def dpkg(package: str) -> str:
        out = subprocess.run(["dpkg-query", "-W", "-f=${Version}", package], capture_output=True, text=True,
                             check=False)
        return out.stdout.strip() or "not installed"

    from gateway import __version__
    return {"xmpp-gateway": __version__, "biboumi": dpkg("biboumi"), "prosody": dpkg("prosody"),
            "ngircd": dpkg("ngircd"), "python": platform.python_version(),
            "kernel": platform.release(), "cpus": str(os.cpu_count())}


def git_head() -> str:
    out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False,
                         cwd=Path(__file__).resolve().parent.parent)
    return out.stdout.strip()


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    directory = run_dir()
    secret = secrets.token_hex(16)
    prosody = BenchProsody(directory=directory / "prosody",
                           components=[ComponentSpec(jid=COMPONENT, secret=secret)])
    users = (["probe", "msguser"] + [f"u{i:04d}" for i in range(max(args.session_steps))]
             + [f"st{i:04d}" for i in range(args.storm)]
             + [f"{kind}{k}" for k in args.join_ks for kind in ("cold", "warm")])
    prosody.write_accounts(users, phases.PASSWORD)
    ngircd = start_ngircd(directory / "ngircd")
    results: dict[str, Any] = {"meta": {
        "started": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "git": git_head(), "versions": versions(), "args": {
            k: v for k, v in vars(args).items() if k not in ("out",) and not k.endswith("_list")},
        "run_dir": str(directory)}, "ours": {}, "biboumi": {}, "errors": []}
    contexts: dict[str, phases.Context] = {}
    try:
        prosody.start()
        pids = {"prosody": prosody.pid or 0, "ngircd": ngircd.pid}
        made: dict[str, Callable[[], Gateway]] = {
            "ours": lambda: Ours("ours", directory / "ours", prosody.component_port, secret, ngircd.port),
            "biboumi": lambda: Biboumi("biboumi", directory / "biboumi", prosody.component_port, secret,
                                       ngircd.port)}
        occupants: list[Any] = []
        for name in args.gateways.split(","):
            ctx = phases.Context(gateway=made[name](), c2s_port=prosody.c2s_port, irc_port=ngircd.port,
                                 pids=pids, occupants=occupants)
            contexts[name] = ctx
        switch = {name: ctx.gateway.supports_archive_switch() for name, ctx in contexts.items()}
        results["meta"]["archive_switch"] = switch
        for group in expand(args):
            for name, ctx in contexts.items():
                await guarded(results, f"{name}/{group}", ctx, lambda ctx=ctx, name=name, group=group:
                              run_group(group, ctx, args, results[name], switch[name]))
        if args.profile and "ours" in contexts:
            await guarded(results, "ours/profile", contexts["ours"], lambda: profile_ours(
                contexts["ours"], args, args.out), store=("ours", "profile"))
    finally:
        for ctx in contexts.values():
            ctx.gateway.stop()
        for client in contexts[next(iter(contexts))].occupants if contexts else []:
            client.close()
        prosody.stop()
        ngircd.stop()
    for name in ("ours", "biboumi"):
        best_of_rounds(results[name])
    results["meta"]["finished"] = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    return results


async def guarded(results: dict[str, Any], what: str, ctx: phases.Context, work: Callable[[], Awaitable[Any]],
                  store: tuple[str, str] | None = None) -> None:
    """Run one group; a failure is recorded and the run goes on with the next one."""
    started = time.monotonic()
    try:
        value = await asyncio.wait_for(work(), 600)
        if store is not None:
            results[store[0]][store[1]] = value
    except Exception as exc:
        print(f"bench: {what} failed: {exc!r}", file=sys.stderr, flush=True)
        results["errors"].append({"what": what, "error": repr(exc), "trace": traceback.format_exc()[-2000:]})
        ctx.gateway.stop()
    finally:
        results.setdefault("group_seconds", {})[what] = round(time.monotonic() - started, 1)


def phase_cpu(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every phase's CPU summary, named ``gateway / phase``, for the who-used-the-CPU table."""
    rows: dict[str, dict[str, Any]] = {}
    for name in ("ours", "biboumi"):
        data = results.get(name, {})
        for key in ("x2i_on", "i2x_on", "x2i_off", "i2x_off", "latency", "storm"):
            if isinstance(data.get(key), dict) and "cpu" in data[key]:
                rows[f"{name} / {key}"] = data[key]["cpu"]
        sessions = data.get("sessions", {})
        for step, value in sessions.get("steps", {}).items():
            rows[f"{name} / joins to {step} sessions"] = value["cpu"]
        if "idle" in sessions:
            rows[f"{name} / idle, {sessions['idle']['sessions']} sessions"] = sessions["idle"]["cpu"]
        for key in ("join_first", "join_last"):
            if key in data:
                rows[f"{name} / cold join K={data[key]['k']}"] = data[key]["cold"]["cpu"]
    return rows


def markdown(results: dict[str, Any]) -> str:
    meta = results["meta"]
    parts = [f"# Bench run {meta['started']} (git {meta['git']})\n",
             f"Versions: {json.dumps(meta['versions'])}\n",
             f"Archive switch available: {json.dumps(meta.get('archive_switch', {}))}\n",
             report.table(results["ours"], results["biboumi"]),
             "\n## CPU by process, per phase (cores = CPU seconds / wall seconds)\n",
             report.cpu_table(phase_cpu(results))]
    profile = results["ours"].get("profile")
    if isinstance(profile, dict):
        parts.append("\n## Profile of ours (py-spy: % of samples; tracemalloc: bytes per session)\n")
        for name, data in profile.items():
            if not isinstance(data, dict):
                continue
            for key in ("self_pct", "inclusive_pct", "bytes_per_session_by_file",
                        "bytes_per_session_by_line"):
                if key in data:
                    items = "; ".join(f"`{k}` {v}" for k, v in data[key].items())
                    parts.append(f"**{name} {key}**: {items}")
            if "traced_bytes_per_session" in data:
                parts.append(f"**{name}**: {data['traced_bytes_per_session']} traced bytes per session "
                             f"over {data['sessions']} sessions")
    if results["errors"]:
        parts.append("\n## Errors\n")
        parts += [f"- {e['what']}: {e['error']}\n" for e in results["errors"]]
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if "biboumi" in args.gateways and shutil.which("biboumi") is None:
        print("bench: biboumi is not installed (./dev bench installs it)", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    # Results are not sources: keep git from offering them for a commit.
    (args.out / ".gitignore").write_text("*\n")
    started = time.monotonic()
    results = asyncio.run(main_async(args))
    results["meta"]["wall_s"] = round(time.monotonic() - started, 1)
    (args.out / "results.json").write_text(json.dumps(results, indent=1, default=str) + "\n")
    text = markdown(results)
    (args.out / "results.md").write_text(text)
    print(text)
    print(f"bench: results in {args.out}/results.json and results.md ({results['meta']['wall_s']} s)")
    if not results["errors"]:  # kept with its logs when something failed
        shutil.rmtree(results["meta"]["run_dir"], ignore_errors=True)
    return 1 if results["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
