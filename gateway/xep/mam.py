"""XEP-0313 Message Archive Management (``urn:xmpp:mam:2``) on room and contact JIDs.

A user queries, from their own JID, the archive *they* have with a room
(``#chan%network@gateway``) or with a contact (``nick%network@gateway``): the
per-user archive of gateway.archive. Supported (§4.1, §4.3, §5, and the
``#extended`` fields):

* form discovery (iq get): FORM_TYPE, ``with``, ``start``, ``end``, ``before-id``,
  ``after-id``, ``ids``; an unknown field is ``feature-not-implemented`` (§4.1.5),
  a malformed value or another FORM_TYPE is ``bad-request``;
* ``with``: on a room, an occupant JID (``room/nick``) selects that nick's lines and
  the bare room JID everything; on a contact, the contact's or the user's own bare
  JID selects the whole conversation; any other JID matches nothing;
* XEP-0059 paging by archive id: ``max`` (at most 100, also the default),
  ``after``, ``before``, an empty ``<before/>`` for the last page, ``index``;
  ``<flip-page/>``; an unknown id is ``item-not-found``;
* results as ``<result queryid id><forwarded><delay/><message/></forwarded></result>``
  messages, then the iq result with ``<fin complete><set>first, last, count</set></fin>``;
* archive metadata (``<metadata/>``, §6 of 1.1): first and last line.

Room results come from the room bare JID, with the line from ``room/nick``
(type ``groupchat``); 1:1 results from the contact JID, type ``chat``.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from twisted.words.protocols.jabber.error import StanzaError
from twisted.words.protocols.jabber.jid import JID, InvalidFormat
from twisted.words.xish import domish

from gateway.archive import Archive
from gateway.jids import parse_jid
from gateway.router import IqRequest, IqRoute
from gateway.stanzas import stanza, xml_safe
from gateway.store.archive_repository import ArchiveQuery, ArchiveRecord, UnknownArchiveId
from gateway.xep.delay import format_stamp, parse_stamp
from gateway.xep.forms import NS_DATA_FORMS
from gateway.xep.rsm import MAX_PAGE, NS_RSM

NS_MAM = "urn:xmpp:mam:2"
NS_MAM_EXTENDED = "urn:xmpp:mam:2#extended"
NS_FORWARD = "urn:xmpp:forward:0"
NS_DELAY = "urn:xmpp:delay"
NS_CLIENT = "jabber:client"
NS_XDATA_VALIDATE = "http://jabber.org/protocol/xdata-validate"

#: Form fields and their types (§4.1.5: with/start/end are jid-single, text-single, text-single).
FIELDS: tuple[tuple[str, str], ...] = (
    ("with", "jid-single"), ("start", "text-single"), ("end", "text-single"),
    ("before-id", "text-single"), ("after-id", "text-single"), ("ids", "list-multi"),
)
_KNOWN = frozenset(var for var, _ in FIELDS) | {"FORM_TYPE"}


class MamHandler:
    """Answers MAM queries to the room and contact JIDs of one gateway."""

    def __init__(self, *, sessions: Any, muc: Any, archive: Archive) -> None:
        self.sessions = sessions
        self.muc = muc
        self.archive = archive

    def iq_routes(self) -> Iterable[IqRoute]:
        return (IqRoute("get", NS_MAM, "query", self.form),
                IqRoute("set", NS_MAM, "query", self.query),
                IqRoute("get", NS_MAM, "metadata", self.metadata))

    def disco_features(self, requestor: JID, target: JID, node: str) -> Iterable[str]:
        if node or target.resource or not self.archive.enabled:
            return ()
        if self.muc.room_address(target) is not None:
            return (NS_MAM, NS_MAM_EXTENDED)
        return ()

    # -- which archive ---------------------------------------------------------------------

    def _archive_of(self, request: IqRequest) -> tuple[str, bool]:
        """The archive's JID and whether it is a room; refuses what has no archive."""
        target = request.recipient
        if not self.archive.enabled or target.resource or not target.user:
            raise StanzaError("service-unavailable", text="no archive here")
        if not self.sessions.policy.allows(request.sender.userhost()):
            raise StanzaError("forbidden", text="this gateway does not serve your domain")
        if self.muc.room_address(target) is not None:
            return target.userhost(), True
        try:
            address = self.sessions.legacy_address(target)
        except ValueError as exc:
            raise StanzaError("service-unavailable", text="no archive here") from exc
        is_service = getattr(self.sessions.plugin, "is_service", None)
        if is_service is not None and is_service(address):
            raise StanzaError("service-unavailable", text="no archive here")
        return target.userhost(), False

    # -- form discovery (§4.1.5) -------------------------------------------------------------

    def form(self, request: IqRequest) -> domish.Element:
        self._archive_of(request)
        query = domish.Element((NS_MAM, "query"))
        form = query.addElement((NS_DATA_FORMS, "x"))
        form["type"] = "form"
        hidden = form.addElement("field")
        hidden["type"], hidden["var"] = "hidden", "FORM_TYPE"
        hidden.addElement("value", content=NS_MAM)
        for var, type_ in FIELDS:
            field = form.addElement("field")
            field["type"], field["var"] = type_, var
            if var == "ids":
                # §4.1.5: the list of ids is open, never enumerated (XEP-0122).
                validate = field.addElement((NS_XDATA_VALIDATE, "validate"))
                validate["datatype"] = "xs:string"
                validate.addElement("open")
        return query

    # -- queries (§4) ------------------------------------------------------------------------

    async def query(self, request: IqRequest) -> domish.Element:
        archive_jid, is_room = self._archive_of(request)
        payload = request.payload
        user = request.sender.userhost()
        fields = _form_values(payload)
        sender: str | None = None
        if "with" in fields:
            with_jid = _jid(_single(fields, "with"))
            if is_room and with_jid.userhost() == archive_jid and with_jid.resource:
                sender = with_jid.resource
            elif with_jid.userhost() not in ((archive_jid,) if is_room else (archive_jid, user)):
                return _fin([], complete=True, count=0)  # nobody else is in this archive
        ids = tuple(value.strip() for value in fields.get("ids", ()))
        if len(ids) > MAX_PAGE or not all(ids):
            raise StanzaError("bad-request", text=f"ids: 1 to {MAX_PAGE} non-empty ids")
        page_set = next(payload.elements(NS_RSM, "set"), None)
        limit, after, before, index = _rsm(page_set)
        try:
            page = await self.archive.query(ArchiveQuery(
                gateway=self.archive.gateway_jid, user=user, with_jid=archive_jid,
                start=_stamp(fields, "start"), end=_stamp(fields, "end"), sender=sender,
                ids=ids, after_id=_optional(fields, "after-id"),
                before_id=_optional(fields, "before-id"), after=after, before=before, index=index,
                limit=limit))
        except UnknownArchiveId as exc:
            raise StanzaError("item-not-found", text="no such id in this archive") from exc
        query_id = payload.getAttribute("queryid")
        records = page.records
        flipped = any(True for _ in payload.elements(NS_MAM, "flip-page"))
        for record in reversed(records) if flipped else records:
            self.sessions.send(self._result(request, archive_jid, is_room, query_id, record))
        return _fin(records, complete=page.complete, count=page.count)

    def _result(self, request: IqRequest, archive_jid: str, is_room: bool, query_id: str | None,
                record: ArchiveRecord) -> domish.Element:
        message = stanza("message", sender=archive_jid, recipient=request.sender.full(), id_=uuid.uuid4().hex)
        result = message.addElement((NS_MAM, "result"))
        if query_id:
            result["queryid"] = query_id
        result["id"] = record.stanza_id
        forwarded = result.addElement((NS_FORWARD, "forwarded"))
        forwarded.addElement((NS_DELAY, "delay"))["stamp"] = format_stamp(record.timestamp)
        inner = forwarded.addElement((NS_CLIENT, "message"))
        user = request.sender.userhost()
        if is_room:
            inner["from"] = xml_safe(f"{archive_jid}/{record.sender}" if record.sender else archive_jid)
            inner["type"] = "groupchat"
        else:
            incoming = record.direction == "in"
            inner["from"], inner["to"] = (archive_jid, user) if incoming else (user, archive_jid)
            inner["type"] = "chat"
        inner["id"] = record.legacy_id or record.stanza_id
        inner.addElement("body", content=xml_safe(record.body))
        return message

    # -- metadata (§6) ---------------------------------------------------------------------

    async def metadata(self, request: IqRequest) -> domish.Element:
        archive_jid, _ = self._archive_of(request)
        user = request.sender.userhost()
        answer = domish.Element((NS_MAM, "metadata"))
        base = {"gateway": self.archive.gateway_jid, "user": user, "with_jid": archive_jid, "limit": 1}
        first = (await self.archive.query(ArchiveQuery(**base))).records
        last = (await self.archive.query(ArchiveQuery(before="", **base))).records
        if first and last:
            for name, record in (("start", first[0]), ("end", last[0])):
                element = answer.addElement(name)
                element["id"], element["timestamp"] = record.stanza_id, format_stamp(record.timestamp)
        return answer


def _fin(records: list[ArchiveRecord], *, complete: bool, count: int) -> domish.Element:
    fin = domish.Element((NS_MAM, "fin"))
    if complete:
        fin["complete"] = "true"
    page = fin.addElement((NS_RSM, "set"))
    if records:
        page.addElement("first", content=records[0].stanza_id)
        page.addElement("last", content=records[-1].stanza_id)
    page.addElement("count", content=str(count))
    return fin


def _form_values(query: domish.Element) -> dict[str, list[str]]:
    """The submitted form's values by field; ``bad-request`` for another FORM_TYPE,
    ``feature-not-implemented`` for a field we do not know (§4.1.5)."""
    form = next(query.elements(NS_DATA_FORMS, "x"), None)
    if form is None:
        return {}
    if form.getAttribute("type", "submit") != "submit":
        raise StanzaError("bad-request", text="the query form must be of type submit")
    values: dict[str, list[str]] = {}
    for field in form.elements(NS_DATA_FORMS, "field"):
        var = field.getAttribute("var", "")
        if var not in _KNOWN:
            raise StanzaError("feature-not-implemented", text=f"unknown query field {var!r}"[:200])
        values[var] = [str(value) for value in field.elements(NS_DATA_FORMS, "value")]
    form_type = values.pop("FORM_TYPE", [NS_MAM])
    if form_type != [NS_MAM]:
        raise StanzaError("bad-request", text=f"FORM_TYPE must be {NS_MAM}")
    return values


def _single(fields: dict[str, list[str]], var: str) -> str:
    values = fields[var]
    if len(values) != 1 or not values[0].strip():
        raise StanzaError("bad-request", text=f"{var} needs one value")
    return values[0].strip()


def _optional(fields: dict[str, list[str]], var: str) -> str | None:
    return _single(fields, var) if var in fields else None


def _stamp(fields: dict[str, list[str]], var: str) -> datetime | None:
    if var not in fields:
        return None
    moment = parse_stamp(_single(fields, var))
    if moment is None:
        raise StanzaError("bad-request", text=f"{var} is not a XEP-0082 date and time")
    return moment


def _jid(text: str) -> JID:
    try:
        return parse_jid(text)
    except InvalidFormat as exc:
        raise StanzaError("bad-request", text="with is not a JID") from exc


def _rsm(page_set: domish.Element | None) -> tuple[int, str | None, str | None, int | None]:
    """(max, after, before, index) of a XEP-0059 request; ``max`` capped (§2.1 lets us)."""
    if page_set is None:
        return MAX_PAGE, None, None, None

    def child(name: str) -> str | None:
        element = next(page_set.elements(NS_RSM, name), None)
        return None if element is None else str(element).strip()

    def number(name: str) -> int | None:
        text = child(name)
        if text is None:
            return None
        try:
            value = int(text)
        except ValueError:
            value = -1
        if not 0 <= value < 2**31:  # also keeps an <index/> within what the database can offset
            raise StanzaError("bad-request", text=f"<{name}/> must be a number of 0 or more")
        return value

    maximum = number("max")
    limit = MAX_PAGE if maximum is None else min(maximum, MAX_PAGE)
    after, before = child("after"), child("before")
    if after == "":
        raise StanzaError("bad-request", text="<after/> needs an id")
    return limit, after, before, number("index")
