"""Raw IRC clients on asyncio protocols: a line callback each, PINGs answered.

The bench's own clients OPER and set ``+F`` on ngircd (no flood protection: a budget of 10
commands per loop instead of 3), as in the Biboumi baseline. ngircd's listen backlog is
hard-coded at 10, so callers open connections at most 10 at a time.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from bench.servers import OPER_NAME, OPER_PASSWORD


class IrcClient(asyncio.Protocol):
    def __init__(self, nick: str) -> None:
        self.nick = nick
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.on_line: Callable[[bytes], None] | None = None
        self._waiters: list[tuple[Callable[[bytes], bool], asyncio.Future[bytes]]] = []
        self.closed = asyncio.Event()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed.set()
        for _, future in self._waiters:
            if not future.done():
                future.set_exception(ConnectionError(f"{self.nick}: IRC connection closed"))

    def data_received(self, data: bytes) -> None:
        if self.on_line is None and not self._waiters:
            # A silent occupant: only keep the connection alive, skip line parsing.
            if b"PING" in data:
                self._lines(data)
            return
        self._lines(data)

    def _lines(self, data: bytes) -> None:
        self.buffer += data
        *lines, self.buffer = self.buffer.split(b"\r\n")
        for line in lines:
            if line.startswith(b"PING"):
                self.send(b"PONG" + line[4:])
                continue
            if self._waiters:
                for waiter in list(self._waiters):
                    predicate, future = waiter
                    if not future.done() and predicate(line):
                        future.set_result(line)
                        self._waiters.remove(waiter)
            if self.on_line is not None:
                self.on_line(line)

    def send(self, line: bytes | str) -> None:
        assert self.transport is not None
        self.transport.write((line.encode() if isinstance(line, str) else line) + b"\r\n")

    async def wait_for(self, predicate: Callable[[bytes], bool], timeout: float = 30.0) -> bytes:
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._waiters.append((predicate, future))
        try:
            return await asyncio.wait_for(future, timeout)
        finally:
            if (predicate, future) in self._waiters:
                self._waiters.remove((predicate, future))

    async def join(self, channel: str, timeout: float = 60.0) -> None:
        end_of_names = f" 366 {self.nick} {channel} ".encode().lower()
        waiting = asyncio.ensure_future(self.wait_for(lambda line: end_of_names in line.lower(), timeout))
        self.send(f"JOIN {channel}")
        await waiting

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.send("QUIT :bench done")
            self.transport.close()


async def connect(port: int, nick: str, *, oper: bool = True, timeout: float = 30.0) -> IrcClient:
    """Connect, register as ``nick`` and (by default) become an operator with user mode ``+F``."""
    loop = asyncio.get_running_loop()
    for attempt in range(5):
        try:
            _, client = await asyncio.wait_for(
                loop.create_connection(lambda: IrcClient(nick), "127.0.0.1", port), timeout)
            break
        except (OSError, TimeoutError):
            if attempt == 4:
                raise
            await asyncio.sleep(0.2 * (attempt + 1))
    welcome = asyncio.ensure_future(client.wait_for(lambda line: f" 001 {nick} ".encode() in line, timeout))
    client.send(f"NICK {nick}")
    client.send(f"USER {nick} 0 * :{nick}")
    await welcome
    if oper:
        opered = asyncio.ensure_future(client.wait_for(lambda line: b" 381 " in line, timeout))
        client.send(f"OPER {OPER_NAME} {OPER_PASSWORD}")
        await opered
        client.send(f"MODE {nick} +F")
    return client
