"""``python -m bench.client_cost``: what one logged-in client costs the bench process, slixmpp
against the bench's lean client (``bench.xmpp``), to justify driving 1200 users with the latter.

Both log in N users to a private Prosody (no TLS on loopback, same accounts) from this one
process; the figures are this process's CPU (from /proc) and RSS growth per client.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import tempfile
from pathlib import Path

from bench.phases import PASSWORD
from bench.proc import cpu_seconds, rss_bytes
from bench.servers import BenchProsody
from bench.xmpp import XmppClient
from gateway.prosody import ComponentSpec


async def slixmpp_clients(prosody: BenchProsody, users: list[str]) -> list[object]:
    from slixmpp import ClientXMPP

    clients = []
    for user in users:
        client = ClientXMPP(f"{user}@{prosody.domain}/bench", PASSWORD,
                            plugin_config={"feature_mechanisms": {"unencrypted_scram": True}})
        client.enable_direct_tls = False
        client.enable_plaintext = True
        client.enable_starttls = False
        started = asyncio.get_running_loop().create_future()
        client.add_event_handler("session_start", lambda _e, f=started: f.done() or f.set_result(None))
        client.connect(host="127.0.0.1", port=prosody.c2s_port)
        await asyncio.wait_for(started, 30)
        clients.append(client)
    return clients


async def lean_clients(prosody: BenchProsody, users: list[str]) -> list[object]:
    clients = []
    for user in users:
        client = XmppClient(user, PASSWORD, prosody.domain, prosody.c2s_port)
        await client.connect()
        clients.append(client)
    return clients


async def measure(n: int) -> dict[str, dict[str, float]]:
    directory = Path(tempfile.mkdtemp(prefix="xgw-client-cost-"))
    prosody = BenchProsody(directory=directory, components=[ComponentSpec(jid="irc.localhost", secret="x")])
    users = [f"c{i:04d}" for i in range(2 * n)]
    prosody.write_accounts(users, PASSWORD)
    prosody.start()
    result: dict[str, dict[str, float]] = {}
    try:
        for name, make, batch in (("lean", lean_clients, users[:n]), ("slixmpp", slixmpp_clients, users[n:])):
            cpu, rss = cpu_seconds(os.getpid()), rss_bytes(os.getpid())
            await make(prosody, batch)
            result[name] = {"clients": n,
                            "cpu_ms_per_login": round((cpu_seconds(os.getpid()) - cpu) / n * 1000, 2),
                            "rss_kb_per_client": round((rss_bytes(os.getpid()) - rss) / n / 1024, 1)}
    finally:
        prosody.stop()
        shutil.rmtree(directory, ignore_errors=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.client_cost", description=__doc__)
    parser.add_argument("--clients", type=int, default=200)
    print(json.dumps(asyncio.run(measure(parser.parse_args().clients)), indent=1))


if __name__ == "__main__":
    main()
