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
    # Printable text (most lines and addresses) has none of them: control characters,
    # surrogates and the non-characters U+FFFE/U+FFFF are all unprintable.
    if text.isprintable():
        return text
    return _ILLEGAL_XML.sub("", text)


def stanza(name: str, *, sender: str, recipient: str, type_: str | None = None,
           id_: str | None = None) -> domish.Element:
    """A new top-level stanza from the component."""
    # Addresses may carry legacy names (an IRC nick as a MUC resource): never let a
    # character XML cannot hold reach the stream, whatever a legacy server sent.
    attributes = {"from": xml_safe(sender), "to": xml_safe(recipient)}
    if type_ is not None:
        attributes["type"] = type_
    if id_:
        attributes["id"] = id_
    return domish.Element((None, name), None, attributes)


def add_child(parent: domish.Element, name: str | tuple[str, str], content: str | None = None,
              attributes: dict[str, str] | None = None) -> domish.Element:
    """``parent.addElement(name, content=content)`` with ``attributes`` set, the same element
    built for less: no interface check per child, one dict for the attributes (hot paths)."""
    if isinstance(name, tuple):
        child = domish.Element(name, name[0], attributes)
    else:
        child = domish.Element((parent.defaultUri, name), parent.defaultUri, attributes)
    child.parent = parent
    parent.children.append(child)
    if content:
        if not isinstance(content, str):
            raise TypeError(f"Expected str not {content!r} ({type(content).__name__})")
        child.children.append(content)
    return child


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


class _Unsupported(Exception):
    """A shape the lean serializer leaves to domish (prefixes, qualified attributes)."""


#: Namespaces domish writes with a prefix on a component stream: the stream's own and xml:.
_PREFIXED = frozenset({"http://etherx.jabber.org/streams", "http://www.w3.org/XML/1998/namespace"})


def to_xml(element: domish.Element, default_uri: str) -> str | None:
    """``element`` serialised as a child of a stream whose default namespace is ``default_uri``,
    exactly as domish's serializer writes it (``XmlStream.send``), or None for a shape it does
    not handle (namespace prefixes, qualified attributes): the caller then lets domish do it.

    domish's generic serializer keeps prefix stacks per element; the stanzas the gateway
    builds never use prefixes, and this is about five times cheaper per stanza.
    """
    out: list[str] = []
    try:
        _write(element, default_uri, out)
    except _Unsupported:
        return None
    return "".join(out)


def _write(element: domish.Element, current: str, out: list[str]) -> None:
    if element.localPrefixes:
        raise _Unsupported
    default = element.defaultUri
    if default is None:
        default = current
    uri = element.uri
    if uri is None:
        uri = default
    if uri != default or uri in _PREFIXED:
        raise _Unsupported
    name = element.name
    if default != current:
        out.append(f"<{name} xmlns='{default}'")
    else:
        out.append(f"<{name}")
    for key, value in element.attributes.items():
        if key.__class__ is not str:
            raise _Unsupported
        if "&" in value or "<" in value or ">" in value or "'" in value or '"' in value:
            value = _escape_attribute(value)
        out.append(f" {key}='{value}'")
    children = element.children
    if not children:
        out.append("/>")
        return
    out.append(">")
    for child in children:
        if child.__class__ is str:
            out.append(_escape_text(child))
        elif isinstance(child, domish.Element):
            _write(child, default, out)
        elif isinstance(child, domish.SerializedXML):
            out.append(child)
        else:
            raise _Unsupported
    out.append(f"</{name}>")


NS_STANZA_ID = "urn:xmpp:sid:0"
NS_MUC_USER = "http://jabber.org/protocol/muc#user"


def groupchat_xml(sender: str, recipient: str, message_id: str | None, body: str, *,
                  origin_id: str | None = None, stanza_id: str | None = None, by: str = "") -> str:
    """A groupchat line written straight as text: exactly ``to_xml`` of
    ``stanza("message", sender=..., recipient=..., type_="groupchat", id_=message_id)`` with
    ``add_child(m, "body", xml_safe(body))``, then an XEP-0359 ``<origin-id id=.../>`` when
    ``origin_id`` and a ``<stanza-id by=... id=.../>`` when ``stanza_id`` (the hot paths of
    groupchat; tests/unit/test_lean_serializer.py holds the two equal)."""
    parts = [f"<message from='{_escape_attribute(xml_safe(sender))}' "
             f"to='{_escape_attribute(xml_safe(recipient))}' type='groupchat'"]
    if message_id:
        parts.append(f" id='{_escape_attribute(message_id)}'")
    body = xml_safe(body)
    parts.append(f"><body>{_escape_text(body)}</body>" if body else "><body/>")
    if origin_id:
        parts.append(f"<origin-id xmlns='{NS_STANZA_ID}' id='{_escape_attribute(origin_id)}'/>")
    if stanza_id:
        parts.append(f"<stanza-id xmlns='{NS_STANZA_ID}' by='{_escape_attribute(by)}' "
                     f"id='{_escape_attribute(stanza_id)}'/>")
    parts.append("</message>")
    return "".join(parts)


def occupant_presence_xml(sender: str, recipient: str, affiliation: str, role: str, jid: str) -> str:
    """An occupant's presence in a join's state written straight as text: exactly ``to_xml``
    of ``stanza("presence", sender=..., recipient=...)`` with a muc#user ``<x><item
    affiliation role [jid]/></x>`` (the join of a big channel sends one per occupant;
    tests/unit/test_lean_serializer.py holds the two equal)."""
    item = f"<item affiliation='{_escape_attribute(affiliation)}' role='{_escape_attribute(role)}'"
    if jid:
        item += f" jid='{_escape_attribute(jid)}'"
    return (f"<presence from='{_escape_attribute(xml_safe(sender))}' "
            f"to='{_escape_attribute(xml_safe(recipient))}'>"
            f"<x xmlns='{NS_MUC_USER}'>{item}/></x></presence>")


def _escape_text(text: str) -> str:
    # The same replacements as domish.escapeToXml, skipped when there is nothing to replace.
    if "&" in text:
        text = text.replace("&", "&amp;")
    if "<" in text:
        text = text.replace("<", "&lt;")
    if ">" in text:
        text = text.replace(">", "&gt;")
    return text


def _escape_attribute(value: str) -> str:
    value = _escape_text(value)
    if "'" in value:
        value = value.replace("'", "&apos;")
    if '"' in value:
        value = value.replace('"', "&quot;")
    return value


def child_text(element: domish.Element, name: str) -> str | None:
    """The text of the first child element called ``name``, or None when there is none."""
    for child in element.elements():
        if child.name == name:
            return str(child)
    return None
