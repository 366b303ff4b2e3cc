"""XEP-0059: Result Set Management, for lists too long for one answer (channel lists, MAM)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

from twisted.words.protocols.jabber.error import StanzaError
from twisted.words.xish import domish

NS_RSM = "http://jabber.org/protocol/rsm"
#: Our own cap on a page, whatever the requester asks for (§2.1 lets the responder choose).
MAX_PAGE = 100

T = TypeVar("T")


def paginate(items: Sequence[T], query: domish.Element, *, key: Callable[[T], str]
             ) -> tuple[Sequence[T], domish.Element | None]:
    """The page of ``items`` a request's ``<set/>`` asks for, and the ``<set/>`` to answer with.

    Without a ``<set/>``, every item (XEP-0059 is optional for the requester) and no set.
    ``after``/``before`` name the key of an item; an unknown one is ``item-not-found``
    (§2.6); ``<before/>`` empty asks for the last page (§2.5); ``<index/>`` jumps (§2.4).
    """
    request = next(query.elements(NS_RSM, "set"), None)
    if request is None:
        return items, None
    maximum = _int_child(request, "max", MAX_PAGE)
    maximum = max(0, min(maximum, MAX_PAGE))
    keys = [key(item) for item in items]
    start, end = 0, len(items)
    after = _child(request, "after")
    before = _child(request, "before")
    index = _child(request, "index")
    if after is not None:
        start = _position(keys, str(after)) + 1
        end = min(len(items), start + maximum)
    elif before is not None:
        end = _position(keys, str(before)) if str(before) else len(items)
        start = max(0, end - maximum)
    else:
        start = min(len(items), _int_child(request, "index", 0)) if index is not None else 0
        end = min(len(items), start + maximum)
    page = items[start:end]
    answer = domish.Element((NS_RSM, "set"))
    if page:
        first = answer.addElement("first", content=keys[start])
        first["index"] = str(start)
        answer.addElement("last", content=keys[end - 1])
    answer.addElement("count", content=str(len(items)))
    return page, answer


def _child(element: domish.Element, name: str) -> domish.Element | None:
    return next(element.elements(NS_RSM, name), None)


def _int_child(element: domish.Element, name: str, default: int) -> int:
    child = _child(element, name)
    if child is None:
        return default
    try:
        return int(str(child))
    except ValueError as exc:
        raise StanzaError("bad-request", text=f"<{name}/> must be a number") from exc


def _position(keys: list[str], wanted: str) -> int:
    try:
        return keys.index(wanted)
    except ValueError as exc:
        raise StanzaError("item-not-found", text="no such item in the result set") from exc
