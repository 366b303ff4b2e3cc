"""The measured phases. Each returns its figures and the CPU each process used meanwhile.

Every phase runs against a freshly started gateway process (see ``bench.__main__``), with the
same XMPP users, rooms and IRC clients for both gateways.
"""

from __future__ import annotations

import asyncio
import math
import os
import statistics
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from bench import irc
from bench.gateways import COMPONENT, Gateway, room
from bench.proc import Meter, rss_bytes
from bench.xmpp import CLIENT, XmppClient

T = TypeVar("T")
PASSWORD = "benchpass"
MSG_CHANNEL = "#bench"
#: Message phases keep metering this long after the last arrival: our archive writes in batches
#: after up to 0.5 s (``flush_interval``), and those writes are part of the cost per message.
ARCHIVE_SETTLE_S = 1.5
BIG_CHANNEL = "#big"


@dataclass
class Context:
    gateway: Gateway
    c2s_port: int
    irc_port: int
    pids: dict[str, int]
    domain: str = "localhost"
    occupants: list[irc.IrcClient] = field(default_factory=list)

    def meter(self) -> Meter:
        return Meter({**self.pids, "gateway": self.gateway.pid, "bench": os.getpid()}).start()

    async def login(self, user: str, *, prepare: bool = True) -> XmppClient:
        client = XmppClient(user, PASSWORD, self.domain, self.c2s_port)
        await client.connect()
        if prepare:
            await self.gateway.prepare_user(client)
        return client


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile (``fraction`` in 0..1) of a non-empty list."""
    ordered = sorted(values)
    # The smallest value with at least ``fraction`` of the values at or below it (epsilon: 0.99 * 100).
    index = max(0, min(len(ordered) - 1, math.ceil(fraction * len(ordered) - 1e-9) - 1))
    return ordered[index]


async def bounded(items: Iterable[T], limit: int, work: Callable[[T], Awaitable[Any]]) -> list[Any]:
    """Run ``work`` on every item, at most ``limit`` at a time; results (or exceptions) in order."""
    semaphore = asyncio.Semaphore(limit)

    async def one(item: T) -> Any:
        async with semaphore:
            return await work(item)

    return await asyncio.gather(*(one(item) for item in items), return_exceptions=True)


async def wait_ready(ctx: Context, timeout: float = 60.0) -> None:
    """Until the component answers disco#info (Prosody answers an error while it is not attached)."""
    probe = await ctx.login("probe", prepare=False)
    try:
        deadline = time.monotonic() + timeout
        while True:
            answer = await probe.iq("<query xmlns='http://jabber.org/protocol/disco#info'/>",
                                    COMPONENT, "get")
            if answer.get("type") == "result":
                return
            process = ctx.gateway.process
            if time.monotonic() > deadline or process is None or process.poll() is not None:
                raise RuntimeError(f"{ctx.gateway.name} did not attach to Prosody")
            await asyncio.sleep(0.2)
    finally:
        await probe.close()


# -- messages --------------------------------------------------------------------------------------

@dataclass
class Pair:
    """The XMPP user and the IRC user that talk in ``#bench``."""

    xmpp: XmppClient
    irc: irc.IrcClient


async def message_pair(ctx: Context, archive: bool) -> Pair:
    xmpp = await ctx.login("msguser")
    await ctx.gateway.set_user_archive(xmpp, archive)
    client = await irc.connect(ctx.irc_port, "ircpeer")
    await client.join(MSG_CHANNEL)
    await xmpp.join(room(MSG_CHANNEL), "xmppuser")
    return Pair(xmpp, client)


async def close_pair(pair: Pair) -> None:
    pair.irc.close()
    await pair.xmpp.close()


def _body(element: Any) -> str | None:
    if element.tag != CLIENT + "message" or element.get("type") != "groupchat":
        return None
    body = element.find(CLIENT + "body")
    return body.text if body is not None else None


async def _windowed(ctx: Context, send: Callable[[int, int], None], arrived: Callable[[], int],
                    wake: asyncio.Event, n: int, window: int, timeout: float) -> tuple[float, bool]:
    """Send ``n`` messages keeping at most ``window`` in flight; returns (seconds, completed)."""
    start = time.monotonic()
    deadline = start + timeout
    sent = 0
    while arrived() < n:
        room_left = window - (sent - arrived())
        if sent < n and room_left > 0:
            batch = min(room_left, n - sent, 50)
            send(sent, batch)
            sent += batch
            await asyncio.sleep(0)
            continue
        wake.clear()
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return time.monotonic() - start, False
        try:
            await asyncio.wait_for(wake.wait(), min(remaining, 5.0))
        except TimeoutError:
            continue
    return time.monotonic() - start, True


async def xmpp_to_irc(ctx: Context, pair: Pair, n: int, window: int) -> dict[str, Any]:
    """XMPP→IRC: ``n`` groupchat messages through the gateway, at most ``window`` in flight."""
    target = room(MSG_CHANNEL)
    marker = b"PRIVMSG " + MSG_CHANNEL.encode() + b" :x2i "
    got = {"irc": 0, "echo": 0}
    latencies: list[float] = []
    wake = asyncio.Event()

    def on_line(line: bytes) -> None:
        index = line.find(marker)
        if index >= 0:
            got["irc"] += 1
            latencies.append(time.monotonic() - float(line[index + len(marker):].split()[1]))
            wake.set()

    def on_stanza(element: Any) -> None:
        body = _body(element)
        if body is not None and body.startswith("x2i "):
            got["echo"] += 1

    def send(first: int, count: int) -> None:
        now = time.monotonic()
        pair.xmpp.send("".join(pair.xmpp.groupchat(target, f"x2i {first + i} {now:.6f}")
                               for i in range(count)))

    pair.irc.on_line, pair.xmpp.on_stanza = on_line, on_stanza
    meter = ctx.meter()
    seconds, complete = await _windowed(ctx, send, lambda: got["irc"], wake, n, window,
                                        timeout=max(60, n / 50))
    # The reflections to the sender are part of the gateway's work for these messages.
    deadline = time.monotonic() + 30
    while got["echo"] < got["irc"] and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    await asyncio.sleep(ARCHIVE_SETTLE_S)
    meter.stop()
    pair.irc.on_line, pair.xmpp.on_stanza = None, lambda element: None
    return _message_result(meter, n, got["irc"], seconds, complete, latencies, echoes=got["echo"])


async def irc_to_xmpp(ctx: Context, pair: Pair, n: int, window: int) -> dict[str, Any]:
    """IRC→XMPP: ``n`` PRIVMSGs from the IRC user to the room, at most ``window`` in flight."""
    got = {"xmpp": 0}
    latencies: list[float] = []
    wake = asyncio.Event()

    def on_stanza(element: Any) -> None:
        body = _body(element)
        if body is not None and body.startswith("i2x "):
            got["xmpp"] += 1
            latencies.append(time.monotonic() - float(body.split()[2]))
            wake.set()

    def send(first: int, count: int) -> None:
        now = time.monotonic()
        assert pair.irc.transport is not None
        pair.irc.transport.write(b"".join(f"PRIVMSG {MSG_CHANNEL} :i2x {first + i} {now:.6f}\r\n".encode()
                                          for i in range(count)))

    pair.xmpp.on_stanza = on_stanza
    meter = ctx.meter()
    seconds, complete = await _windowed(ctx, send, lambda: got["xmpp"], wake, n, window,
                                        timeout=max(60, n / 50))
    await asyncio.sleep(ARCHIVE_SETTLE_S)
    meter.stop()
    pair.xmpp.on_stanza = lambda element: None
    return _message_result(meter, n, got["xmpp"], seconds, complete, latencies)


def _message_result(meter: Meter, n: int, arrived: int, seconds: float, complete: bool,
                    latencies: list[float], **extra: Any) -> dict[str, Any]:
    summary = meter.summary()
    cpu = summary["cpu_s"]
    assert isinstance(cpu, dict)
    return {
        "messages": n, "arrived": arrived, "complete": complete, **extra,
        "msgs_per_s": round(arrived / seconds, 1) if seconds > 0 else None,
        "gateway_cpu_us_per_msg": round(cpu["gateway"] / max(arrived, 1) * 1e6, 1),
        "loaded_latency_ms": _latency_summary(latencies),
        "cpu": summary,
    }


def _latency_summary(latencies: list[float]) -> dict[str, float] | None:
    if not latencies:
        return None
    ms = [value * 1000 for value in latencies]
    return {"p50": round(percentile(ms, 0.5), 2), "p99": round(percentile(ms, 0.99), 2),
            "max": round(max(ms), 2), "count": len(ms)}


async def paced_latency(ctx: Context, pair: Pair, n: int, rate: float) -> dict[str, Any]:
    """One message every 1/``rate`` s each way (one direction after the other); latency per message."""
    target = room(MSG_CHANNEL)
    x2i: list[float] = []
    i2x: list[float] = []
    marker = b" :lat "

    def on_line(line: bytes) -> None:
        index = line.find(marker)
        if index >= 0:
            x2i.append(time.monotonic() - float(line[index + len(marker):].split()[0]))

    def on_stanza(element: Any) -> None:
        body = _body(element)
        if body is not None and body.startswith("lat ") and "/ircpeer" in element.get("from", ""):
            i2x.append(time.monotonic() - float(body.split()[1]))

    pair.irc.on_line, pair.xmpp.on_stanza = on_line, on_stanza
    meter = ctx.meter()
    start = time.monotonic()
    for i in range(n):
        await asyncio.sleep(max(0.0, start + i / rate - time.monotonic()))
        pair.xmpp.send(pair.xmpp.groupchat(target, f"lat {time.monotonic():.6f}"))
    start = time.monotonic() + 0.5
    for i in range(n):
        await asyncio.sleep(max(0.0, start + i / rate - time.monotonic()))
        pair.irc.send(f"PRIVMSG {MSG_CHANNEL} :lat {time.monotonic():.6f}")
    deadline = time.monotonic() + 10
    while (len(x2i) < n or len(i2x) < n) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    meter.stop()
    pair.irc.on_line, pair.xmpp.on_stanza = None, lambda element: None
    return {"rate": rate, "x2i_ms": _latency_summary(x2i), "i2x_ms": _latency_summary(i2x),
            "cpu": meter.summary()}


# -- sessions --------------------------------------------------------------------------------------

async def sessions(ctx: Context, steps: list[int], idle_s: float, prefix: str = "u") -> dict[str, Any]:
    """Users each join a channel of their own (one IRC connection each), in steps; RSS after each step,
    then the gateway's idle CPU holding them all."""
    clients: list[XmppClient] = []
    result: dict[str, Any] = {"steps": {}}
    rss_growth = 0
    joined_total = 0

    async def login(index: int) -> XmppClient:
        return await ctx.login(f"{prefix}{index:04d}")

    async def join(client: XmppClient) -> float:
        started = time.monotonic()
        await client.join(room(f"#s{client.user}"), f"n{client.user}")
        return time.monotonic() - started

    for target in steps:
        first = len(clients)
        logged = await bounded(range(first, target), 50, login)
        failures = [item for item in logged if isinstance(item, BaseException)]
        new = [item for item in logged if isinstance(item, XmppClient)]
        clients += new
        await asyncio.sleep(1.0)
        rss_before = rss_bytes(ctx.gateway.pid)
        meter = ctx.meter()
        # ngircd's listen backlog is 10: more joins at once would only measure SYN retries.
        times = await bounded(new, 10, join)
        meter.stop()
        await asyncio.sleep(1.0)
        rss_after = rss_bytes(ctx.gateway.pid)
        ok = [value for value in times if isinstance(value, float)]
        errors = [repr(value) for value in times if not isinstance(value, float)][:3]
        rss_growth += rss_after - rss_before
        joined_total += len(ok)
        cpu = meter.summary()["cpu_s"]
        assert isinstance(cpu, dict)
        result["steps"][str(target)] = {
            "joined": joined_total, "login_failures": len(failures), "join_failures": len(times) - len(ok),
            "errors": errors + [repr(f) for f in failures[:3]],
            "rss_before_mb": round(rss_before / 2**20, 2), "rss_after_mb": round(rss_after / 2**20, 2),
            # Growth over the join steps only (logins in between do not touch the gateway's sessions).
            "rss_per_session_kb": round(rss_growth / max(joined_total, 1) / 1024, 2),
            "join_ms": _latency_summary(ok),
            "joins_per_s": round(len(ok) / max(meter.wall_s, 1e-9), 1),
            "gateway_cpu_ms_per_join": round(cpu["gateway"] / max(len(ok), 1) * 1000, 2),
            "cpu": meter.summary(),
        }
    await asyncio.sleep(2.0)
    meter = ctx.meter()
    await asyncio.sleep(idle_s)
    meter.stop()
    idle = meter.summary()
    cores = idle["cores"]
    assert isinstance(cores, dict)
    result["idle"] = {"sessions": joined_total, "seconds": idle_s, "gateway_cores": cores["gateway"],
                      "cpu": idle}
    await asyncio.gather(*(client.close() for client in clients), return_exceptions=True)
    await asyncio.sleep(2.0)
    result["rss_after_logout_mb"] = round(rss_bytes(ctx.gateway.pid) / 2**20, 2)
    return result


# -- big channel -----------------------------------------------------------------------------------

async def fill_big_channel(ctx: Context, k: int) -> float:
    """Bring ``#big`` to ``k`` raw IRC occupants (kept for both gateways); returns seconds spent."""
    started = time.monotonic()

    async def add(index: int) -> irc.IrcClient:
        client = await irc.connect(ctx.irc_port, f"occ{index:04d}")
        await client.join(BIG_CHANNEL)
        return client

    added = await bounded(range(len(ctx.occupants), k), 10, add)
    ctx.occupants += [client for client in added if isinstance(client, irc.IrcClient)]
    missing = [value for value in added if not isinstance(value, irc.IrcClient)]
    if missing:
        raise RuntimeError(f"{len(missing)} IRC occupants failed, first: {missing[0]!r}")
    return time.monotonic() - started


async def big_join(ctx: Context, k: int, reps: int) -> dict[str, Any]:
    """Time from the join presence to the self-presence in a channel of ``k`` IRC occupants: once
    cold (the gateway connects to IRC first) and ``reps`` times warm (already connected)."""
    filled = await fill_big_channel(ctx, k)
    target = room(BIG_CHANNEL)

    async def timed(client: XmppClient, nick: str) -> dict[str, Any]:
        meter = ctx.meter()
        started = time.monotonic()
        _, before = await client.join(target, nick, timeout=120)
        elapsed = time.monotonic() - started
        meter.stop()
        cpu = meter.summary()["cpu_s"]
        assert isinstance(cpu, dict)
        return {"ms": round(elapsed * 1000, 1), "presences_before_self": before,
                "gateway_cpu_ms": round(cpu["gateway"] * 1000, 1), "cpu": meter.summary()}

    # The warm user connects first: the cold join then measures a new IRC connection and the join,
    # not the first steps of a fresh gateway process (lazy imports, cold caches).
    warm_user = await ctx.login(f"warm{k}")
    await warm_user.join(room("#lobby"), f"warm{k}")
    cold_user = await ctx.login(f"cold{k}")
    cold = await timed(cold_user, f"cold{k}")
    await cold_user.close()
    warm = []
    for _ in range(reps):
        warm.append(await timed(warm_user, f"warm{k}"))
        await warm_user.leave(target, f"warm{k}")
    await warm_user.close()
    return {"k": k, "fill_s": round(filled, 1), "cold": cold, "warm": warm,
            "warm_median_ms": statistics.median(w["ms"] for w in warm)}


# -- log-in storm ----------------------------------------------------------------------------------

async def storm(ctx: Context, users: int, timeout: float = 120.0) -> dict[str, Any]:
    """``users`` users log in at once and each joins a room of its own: time until all are in."""
    names = [f"st{index:04d}" for index in range(users)]
    # Per-user gateway preparation (Biboumi's server configuration) happens before, not in the storm.
    prepared = await bounded(names, 50, lambda name: ctx.login(name))
    await asyncio.gather(*(c.close() for c in prepared if isinstance(c, XmppClient)), return_exceptions=True)
    await asyncio.sleep(1.0)
    clients: list[XmppClient] = []
    done: list[float] = []

    async def one(name: str) -> None:
        client = await ctx.login(name, prepare=False)
        clients.append(client)
        await client.join(room(f"#{name}"), name, timeout=timeout)
        done.append(time.monotonic() - started)

    meter = ctx.meter()
    started = time.monotonic()
    outcomes = await asyncio.gather(*(one(name) for name in names), return_exceptions=True)
    meter.stop()
    failures = [repr(value) for value in outcomes if isinstance(value, BaseException)]
    result = {
        "users": users, "in_rooms": len(done), "failures": len(failures), "errors": failures[:3],
        "all_in_s": round(max(done), 3) if len(done) == users else None,
        "p50_s": round(percentile(done, 0.5), 3) if done else None,
        "cpu": meter.summary(),
    }
    await asyncio.gather(*(client.close() for client in clients), return_exceptions=True)
    return result
