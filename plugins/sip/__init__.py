"""SIP MESSAGE plugin (RFC 3428 page mode, RFC 3261 core, RFC 7247/7572 mapping to XMPP).

The SIP core here is sans-I/O (STYLE.md G4): ``uri`` and ``codec`` parse and build
messages, ``digest`` answers challenges, ``transaction`` runs the RFC 3261 §17
non-INVITE state machines on an injected clock, and ``status`` maps SIP outcomes to
XMPP stanza error conditions. Twisted only drives them at the edge.
"""
