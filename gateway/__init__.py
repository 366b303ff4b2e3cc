"""xmpp-gateway: an XEP-0114 component that gateways XMPP to legacy networks (XEP-0100)."""

__version__ = "0.1.0"
