"""SIP MESSAGE plugin (RFC 3428 page mode, RFC 3261 core, RFC 7247/7572 mapping to XMPP).

The SIP core is sans-I/O (STYLE.md G4): ``uri`` and ``codec`` parse and build
messages, ``digest`` answers challenges, ``transaction`` runs the RFC 3261 §17
non-INVITE state machines on an injected clock, and ``status`` maps SIP outcomes to
XMPP stanza error conditions. Twisted drives them at the edge: ``transport`` (UDP,
TCP, TLS) and ``stack`` (one timer, sockets held while accounts are active), with
``resolver`` (RFC 3263). The user agent is ``ua`` (requests, digest retries,
failover), ``registration`` (REGISTER and refresh) and ``uas`` (incoming requests);
``plugin`` is the gateway plugin (docs/sip.md).
"""
