"""The lean stanza serializer (gateway.stanzas.to_xml, issue 7) writes exactly what domish
writes on a component stream, character for character, for every shape the gateway builds,
and declines the shapes it does not handle (so that domish writes those)."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.words.protocols.jabber.error import StanzaError
from twisted.words.protocols.jabber.xmlstream import NS_STREAMS, toResponse
from twisted.words.xish import domish

from gateway.stanzas import error_reply, stanza, to_xml, xml_safe
from gateway.xep.delay import add_delay

NS = "jabber:component:accept"


def domish_xml(element: domish.Element) -> str:
    """What twisted.words.protocols.jabber.xmlstream.XmlStream.send writes for ``element``."""
    return element.toXml(prefixes={NS_STREAMS: "stream"}, defaultUri=NS, prefixesInScope=["stream"])


def parse(xml: str) -> domish.Element:
    elements: list[domish.Element] = []
    stream = domish.elementStream()
    stream.DocumentStartEvent = lambda root: None
    stream.ElementEvent = elements.append
    stream.DocumentEndEvent = lambda: None
    stream.parse(f"<stream:stream xmlns='{NS}' xmlns:stream='{NS_STREAMS}'>{xml}".encode())
    return elements[0]


def groupchat(body: str, sender: str = "#chan%irc.example.net@gw.example.org/bob") -> domish.Element:
    element = stanza("message", sender=sender, recipient="alice@example.org/phone", type_="groupchat",
                     id_="id-1")
    element.addElement("body", content=xml_safe(body))
    element.addElement(("urn:xmpp:sid:0", "origin-id"))["id"] = "o'1"
    sid = element.addElement(("urn:xmpp:sid:0", "stanza-id"))
    sid["by"], sid["id"] = "#chan%irc.example.net@gw.example.org", "s1"
    return element


def occupant_presence() -> domish.Element:
    element = stanza("presence", sender="#chan@gw.example.org/b\"o<b>", recipient="alice@example.org/phone",
                     type_="unavailable")
    x = element.addElement(("http://jabber.org/protocol/muc#user", "x"))
    item = x.addElement("item")
    item["affiliation"], item["role"], item["jid"] = "none", "none", "bob%irc@gw.example.org"
    item.addElement("actor")["nick"] = "op & co"
    item.addElement("reason", content="bye <3 & 'later' \"ok\"")
    for code in ("307", "110"):
        x.addElement("status")["code"] = code
    return element


def test_the_shapes_the_gateway_builds_are_written_as_domish_writes_them():
    shapes = [groupchat("plain"), groupchat("a & b < c > d 'e' \"f\" été 日本 🎉"), occupant_presence(),
              stanza("message", sender="a@gw", recipient="b@c"), stanza("presence", sender="a", recipient="b")]
    delayed = groupchat("late")
    add_delay(delayed, datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC), "#chan@gw.example.org")
    shapes.append(delayed)
    subject = stanza("message", sender="r@gw", recipient="u@h/r", type_="groupchat", id_="x")
    subject.addElement("subject", content="")
    shapes.append(subject)
    for element in shapes:
        assert to_xml(element, NS) == domish_xml(element), element.toXml()


def test_replies_to_parsed_stanzas_are_written_as_domish_writes_them():
    """Parsed stanzas carry the stream's namespace; replies built from them (iq results,
    errors that echo the request) keep it implicit, as domish does."""
    request = parse("<iq type='get' id='q&amp;1' from='alice@example.org/phone' to='gw.example.org'>"
                    "<query xmlns='jabber:iq:version'/></iq>")
    result = toResponse(request, "result")
    result.addElement(("jabber:iq:version", "query")).addElement("name", content="xmpp-gateway")
    assert to_xml(result, NS) == domish_xml(result)
    message = parse("<message type='chat' id='m1' from='a@b/c' to='d@gw.example.org'><body>hi &amp; bye</body>"
                    "<x xmlns='urn:example'><y/>text</x></message>")
    reply = error_reply(message, "service-unavailable")
    xml = to_xml(reply, NS)
    assert xml is None or xml == domish_xml(reply)
    assert to_xml(message, NS) == domish_xml(message)


def test_prefixes_and_qualified_attributes_are_left_to_domish():
    """A StanzaError's text carries xml:lang only if asked; prefixes and qualified attributes
    make to_xml decline, so that domish writes them."""
    element = stanza("message", sender="a@gw", recipient="b@c")
    element[("http://www.w3.org/XML/1998/namespace", "lang")] = "en"
    assert to_xml(element, NS) is None
    prefixed = domish.Element(("urn:example", "x"), localPrefixes={"ex": "urn:example"})
    holder = stanza("message", sender="a@gw", recipient="b@c")
    holder.addChild(prefixed)
    assert to_xml(holder, NS) is None
    other_default = domish.Element(("urn:a", "x"), defaultUri="urn:b")
    assert to_xml(other_default, NS) is None
    error = StanzaError("bad-request", text="why").toResponse(stanza("iq", sender="a@gw", recipient="b@c",
                                                                      type_="get", id_="1"))
    xml = to_xml(error, NS)
    assert xml is None or xml == domish_xml(error)


text = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=40)


@settings(max_examples=300, deadline=None)
@given(body=text, nick=text, reason=text)
def test_any_text_is_escaped_as_domish_escapes_it(body, nick, reason):
    element = groupchat(body, sender=f"#chan@gw.example.org/{xml_safe(nick)}")
    element.addElement(("urn:example", "note"), content=xml_safe(reason))["attr"] = xml_safe(reason)
    xml = to_xml(element, NS)
    assert xml == domish_xml(element)
    # Well-formed: it parses back (line ends aside, which XML normalises, the same text).
    again = parse(xml)
    assert str(again.body).replace("\r", "\n") == xml_safe(body).replace("\r\n", "\n").replace("\r", "\n")


def test_add_child_builds_what_add_element_builds():
    """stanzas.add_child: the same tree as addElement plus attribute assignment."""
    from gateway.stanzas import add_child

    def fields(element):
        return (element.uri, element.name, element.defaultUri, element.attributes, element.localPrefixes,
                [fields(c) if isinstance(c, domish.Element) else c for c in element.children])

    for parent_uri in (None, "urn:parent"):
        old = domish.Element((parent_uri, "message"))
        new = domish.Element((parent_uri, "message"))
        body = old.addElement("body", content="hi & bye")
        assert add_child(new, "body", "hi & bye").parent is new and body.parent is old
        old.addElement("empty", content="")
        add_child(new, "empty", "")
        sid = old.addElement(("urn:xmpp:sid:0", "stanza-id"))
        sid["by"], sid["id"] = "room@gw", "s1"
        add_child(new, ("urn:xmpp:sid:0", "stanza-id"), attributes={"by": "room@gw", "id": "s1"})
        assert fields(new) == fields(old)
        assert to_xml(new, NS) == domish_xml(old)


@settings(max_examples=400, deadline=None)
@given(sender=text, recipient=text, message_id=st.none() | text, body=text, origin_id=st.none() | text,
       stanza_id=st.none() | text, by=text)
def test_groupchat_text_is_what_the_element_serialises_to(sender, recipient, message_id, body, origin_id,
                                                          stanza_id, by):
    """stanzas.groupchat_xml (the groupchat hot paths) writes what to_xml writes for the element
    built the usual way: same attributes, order, escaping, namespaces and empty-body form."""
    from gateway.stanzas import add_child, groupchat_xml

    element = stanza("message", sender=sender, recipient=recipient, type_="groupchat", id_=message_id)
    add_child(element, "body", xml_safe(body))
    if origin_id:
        add_child(element, ("urn:xmpp:sid:0", "origin-id"), attributes={"id": origin_id})
    if stanza_id:
        add_child(element, ("urn:xmpp:sid:0", "stanza-id"), attributes={"by": by, "id": stanza_id})
    assert groupchat_xml(sender, recipient, message_id, body, origin_id=origin_id, stanza_id=stanza_id,
                         by=by) == to_xml(element, NS) == domish_xml(element)


@settings(max_examples=300, deadline=None)
@given(sender=text, recipient=text, affiliation=st.sampled_from(["owner", "admin", "member", "none"]),
       role=st.sampled_from(["moderator", "participant", "visitor"]), jid=st.just("") | text)
def test_occupant_presence_text_is_what_the_element_serialises_to(sender, recipient, affiliation, role, jid):
    """stanzas.occupant_presence_xml (a join's occupants) writes what to_xml writes for the
    presence MucHandler._occupant_presence builds for an occupant in the room."""
    from gateway.stanzas import occupant_presence_xml

    element = stanza("presence", sender=sender, recipient=recipient)
    item = element.addElement(("http://jabber.org/protocol/muc#user", "x")).addElement("item")
    item["affiliation"], item["role"] = affiliation, role
    if jid:
        item["jid"] = jid
    assert occupant_presence_xml(sender, recipient, affiliation, role, jid) == to_xml(element, NS) \
        == domish_xml(element)
