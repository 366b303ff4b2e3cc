"""Stanza building blocks shared by the core: namespaces, builders, redaction.

Only the core touches XML; plugins get and give typed events (gateway.plugin).
"""

from __future__ import annotations

import re

from twisted.words.protocols.jabber.error import StanzaError
from twisted.words.protocols.jabber.xmlstream import toResponse
from twisted.words.xish import domish

NS_CHATSTATES = "http://jabber.org/protocol/chatstates"

#: RFC 6120 §8.3.3 characters allowed in XML 1.0 text; everything else must never reach domish.
_ILLEGAL_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff\ud800-\udfff]")


def xml_safe(text: str) -> str:
    """Drop characters XML 1.0 cannot carry (IRC control codes, NUL, lone surrogates)."""
    return _ILLEGAL_XML.sub("", text)


def stanza(name: str, *, sender: str, recipient: str, type_: str | None = None,
           id_: str | None = None) -> domish.Element:
    """A new top-level stanza from the component."""
    element = domish.Element((None, name))
    # Addresses may carry legacy names (an IRC nick as a MUC resource): never let a
    # character XML cannot hold reach the stream, whatever a legacy server sent.
    element["from"] = xml_safe(sender)
    element["to"] = xml_safe(recipient)
    if type_ is not None:
        element["type"] = type_
    if id_:
        element["id"] = id_
    return element


def error_reply(original: domish.Element, condition: str, text: str | None = None,
                *, echo: bool = True) -> domish.Element:
    """An error reply to ``original`` (RFC 6120 §8.3), optionally echoing its payload."""
    exc = StanzaError(condition, text=text)
    if echo:
        return exc.toResponse(original)
    reply = toResponse(original, "error")
    reply.addChild(exc.getElement())
    return reply


#: Element names and data-form fields whose content is never logged.
_SECRET_NAMES = frozenset({"password", "handshake"})
_SECRET_FIELD = re.compile(r"pass|secret|token|key", re.IGNORECASE)


def redacted_xml(element: domish.Element, secret_fields: frozenset[str] = frozenset()) -> str:
    """Serialise ``element`` for debug logging with passwords and secrets masked."""
    return redacted_copy(element, secret_fields).toXml()


def redacted_copy(element: domish.Element, secret_fields: frozenset[str] = frozenset(),
                  mask: str = "***") -> domish.Element:
    """A deep copy of ``element`` with the content of passwords and secret form fields
    replaced by ``mask``: for logs, and for error replies that echo a request."""
    copy = domish.Element((element.uri, element.name), element.defaultUri,
                          dict(element.attributes), dict(element.localPrefixes or {}))
    # A secret is a password element, a bare XEP-0077 field named after a secret form field,
    # or a data-form field that is private or secret.
    secret = element.name in _SECRET_NAMES or element.name in secret_fields or (
        element.name == "field"
        and (
            element.getAttribute("type") == "text-private"
            or element.getAttribute("var", "") in secret_fields
            or bool(_SECRET_FIELD.search(element.getAttribute("var", "")))
        )
    )
    for child in element.children:
        if isinstance(child, domish.Element):
            if secret and child.name == "value":
                masked = domish.Element((child.uri, "value"))
                masked.addContent(mask)
                copy.addChild(masked)
            else:
                copy.addChild(redacted_copy(child, secret_fields, mask))
        elif secret and element.name != "field":
            if mask:
                copy.addContent(mask)
        else:
            copy.addContent(child)
    return copy


def child_text(element: domish.Element, name: str) -> str | None:
    """The text of the first child element called ``name``, or None when there is none."""
    for child in element.elements():
        if child.name == name:
            return str(child)
    return None
