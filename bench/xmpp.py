"""A lean XMPP client on raw asyncio streams, many per process.

Why not slixmpp here: the bench needs up to 1200 simultaneous users in the one process that
also drives the IRC side. A slixmpp client carries a plugin registry, roster bookkeeping,
an event loop's worth of handlers and (with TLS) the system CA store, about 30 ms and 1 MB
per client in the Biboumi baseline, so 1000 of them would make the client the bottleneck of
the log-in storm and blur the idle figures. This client speaks exactly what the phases need
(RFC 6120 stream, SASL PLAIN without TLS on loopback, resource binding, raw stanzas out, a
callback per stanza in) over expat (``XMLPullParser``). Every phase reports this process's CPU,
so a reader can check the client was never the limit.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import xml.etree.ElementTree as ET
from collections.abc import Callable
from xml.sax.saxutils import escape, quoteattr

STREAM_NS = "http://etherx.jabber.org/streams"
CLIENT = "{jabber:client}"
MUC_USER = "{http://jabber.org/protocol/muc#user}"
COMMANDS = "{http://jabber.org/protocol/commands}"
DATA = "{jabber:x:data}"

_ids = itertools.count(1)


def new_id(prefix: str = "b") -> str:
    return f"{prefix}{next(_ids)}"


class XmppError(RuntimeError):
    pass


class _Stream(asyncio.Protocol):
    """Feeds bytes to an incremental parser and hands over each top-level element."""

    def __init__(self, client: XmppClient) -> None:
        self.client = client
        self.transport: asyncio.Transport | None = None
        self.reset()

    def reset(self) -> None:
        self.parser = ET.XMLPullParser(events=("start", "end"))
        self.depth = 0
        self.root: ET.Element | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.parser.feed(data)
        for event, element in self.parser.read_events():
            if event == "start":
                if self.depth == 0:
                    self.root = element
                self.depth += 1
            else:
                self.depth -= 1
                if self.depth == 1:
                    if self.root is not None:
                        self.root.remove(element)
                    self.client.dispatch(element)

    def connection_lost(self, exc: Exception | None) -> None:
        self.client.closed.set()
        for future in self.client.pending.values():
            if not future.done():
                future.set_exception(ConnectionError("stream closed"))


class XmppClient:
    """One user's c2s stream. ``on_stanza`` sees every stanza that is not an awaited iq answer."""

    def __init__(self, user: str, password: str, domain: str, port: int) -> None:
        self.user, self.password, self.domain, self.port = user, password, domain, port
        self.jid = ""
        self.on_stanza: Callable[[ET.Element], None] = lambda element: None
        self.pending: dict[str, asyncio.Future[ET.Element]] = {}
        self.closed = asyncio.Event()
        self._stream: _Stream | None = None
        self._waiters: list[tuple[Callable[[ET.Element], bool], asyncio.Future[ET.Element]]] = []

    # -- wire --------------------------------------------------------------------------------------

    def send(self, data: str) -> None:
        assert self._stream is not None and self._stream.transport is not None
        self._stream.transport.write(data.encode())

    def dispatch(self, element: ET.Element) -> None:
        if element.tag == CLIENT + "iq" and element.get("type") in ("result", "error"):
            future = self.pending.pop(element.get("id", ""), None)
            if future is not None and not future.done():
                future.set_result(element)
                return
        if self._waiters:
            for waiter in list(self._waiters):
                predicate, future = waiter
                if not future.done() and predicate(element):
                    future.set_result(element)
                    self._waiters.remove(waiter)
        self.on_stanza(element)

    async def wait_for(self, predicate: Callable[[ET.Element], bool], timeout: float = 30.0) -> ET.Element:
        future: asyncio.Future[ET.Element] = asyncio.get_running_loop().create_future()
        self._waiters.append((predicate, future))
        try:
            return await asyncio.wait_for(future, timeout)
        finally:
            if (predicate, future) in self._waiters:
                self._waiters.remove((predicate, future))

    async def iq(self, xml_body: str, to: str, kind: str = "set", timeout: float = 30.0) -> ET.Element:
        ident = new_id("iq")
        future: asyncio.Future[ET.Element] = asyncio.get_running_loop().create_future()
        self.pending[ident] = future
        self.send(f"<iq type='{kind}' id='{ident}' to={quoteattr(to)}>{xml_body}</iq>")
        try:
            return await asyncio.wait_for(future, timeout)
        finally:
            self.pending.pop(ident, None)

    # -- log-in ------------------------------------------------------------------------------------

    def _open(self) -> None:
        self.send(f"<?xml version='1.0'?><stream:stream to='{self.domain}' version='1.0' "
                  "xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>")

    async def connect(self, timeout: float = 60.0) -> None:
        await asyncio.wait_for(self._connect(), timeout)

    async def _connect(self) -> None:
        loop = asyncio.get_running_loop()
        _, stream = await loop.create_connection(lambda: _Stream(self), "127.0.0.1", self.port)
        self._stream = stream
        features = f"{{{STREAM_NS}}}features"
        waiting = asyncio.ensure_future(self.wait_for(lambda e: e.tag == features))
        self._open()
        await waiting
        sasl = "{urn:ietf:params:xml:ns:xmpp-sasl}"
        token = base64.b64encode(f"\0{self.user}\0{self.password}".encode()).decode()
        waiting = asyncio.ensure_future(self.wait_for(lambda e: e.tag.startswith(sasl)))
        self.send(f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{token}</auth>")
        answer = await waiting
        if answer.tag != sasl + "success":
            raise XmppError(f"{self.user}: authentication failed: {answer.tag}")
        stream.reset()
        waiting = asyncio.ensure_future(self.wait_for(lambda e: e.tag == features))
        self._open()
        await waiting
        bound = await self.iq("<bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
                              "<resource>bench</resource></bind>", to=self.domain)
        jid = bound.find(".//{urn:ietf:params:xml:ns:xmpp-bind}jid")
        if jid is None or not jid.text:
            raise XmppError(f"{self.user}: bind failed")
        self.jid = jid.text

    async def close(self) -> None:
        if self._stream is not None and self._stream.transport is not None and not self.closed.is_set():
            self._stream.transport.write(b"</stream:stream>")
            try:
                await asyncio.wait_for(self.closed.wait(), 5)
            except TimeoutError:
                self._stream.transport.abort()

    # -- rooms -------------------------------------------------------------------------------------

    async def join(self, room: str, nick: str, timeout: float = 60.0) -> tuple[ET.Element, int]:
        """Join ``room``; returns the self-presence (status 110) and how many presences came first."""
        seen = 0
        occupant = f"{room}/"

        def self_presence(element: ET.Element) -> bool:
            nonlocal seen
            if element.tag != CLIENT + "presence" or not element.get("from", "").startswith(occupant):
                return False
            if element.get("type") == "error":
                return True
            for status in element.iter(MUC_USER + "status"):
                if status.get("code") == "110":
                    return True
            seen += 1
            return False

        waiting = asyncio.ensure_future(self.wait_for(self_presence, timeout))
        self.send(f"<presence to={quoteattr(f'{room}/{nick}')}>"
                  "<x xmlns='http://jabber.org/protocol/muc'><history maxstanzas='0'/></x></presence>")
        presence = await waiting
        if presence.get("type") == "error":
            raise XmppError(f"{self.user}: join {room} failed: {ET.tostring(presence)[:300]!r}")
        return presence, seen

    async def leave(self, room: str, nick: str, timeout: float = 30.0) -> None:
        occupant = f"{room}/"
        waiting = asyncio.ensure_future(self.wait_for(
            lambda e: e.tag == CLIENT + "presence" and e.get("type") == "unavailable"
            and e.get("from", "").startswith(occupant)
            and any(s.get("code") == "110" for s in e.iter(MUC_USER + "status")), timeout))
        self.send(f"<presence type='unavailable' to={quoteattr(f'{room}/{nick}')}/>")
        await waiting

    def groupchat(self, room: str, body: str) -> str:
        return f"<message type='groupchat' to={quoteattr(room)}><body>{escape(body)}</body></message>"

    # -- ad-hoc commands (XEP-0050) ----------------------------------------------------------------

    async def run_command(self, to: str, node: str, fields: dict[str, list[str]]) -> None:
        """Execute ``node`` on ``to`` and submit ``fields`` in one step; raise unless completed."""
        first = await self.iq(f"<command xmlns='http://jabber.org/protocol/commands' node={quoteattr(node)} "
                              "action='execute'/>", to=to)
        command = first.find(COMMANDS + "command")
        if first.get("type") != "result" or command is None:
            raise XmppError(f"{to} {node}: {ET.tostring(first)[:300]!r}")
        values = "".join(
            f"<field var={quoteattr(var)}>" + "".join(f"<value>{escape(v)}</value>" for v in vals)
            + "</field>" for var, vals in fields.items())
        done = await self.iq(
            f"<command xmlns='http://jabber.org/protocol/commands' node={quoteattr(node)} "
            f"sessionid={quoteattr(command.get('sessionid', ''))} action='complete'>"
            f"<x xmlns='jabber:x:data' type='submit'>{values}</x></command>", to=to)
        answer = done.find(COMMANDS + "command")
        if done.get("type") != "result" or answer is None or answer.get("status") != "completed":
            raise XmppError(f"{to} {node} submit: {ET.tostring(done)[:300]!r}")
