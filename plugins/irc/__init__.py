"""IRC plugin: the IRC protocol layer (lines, ISUPPORT, formatting, charsets, CAP/SASL, flood control).

Each module has one job and, except :mod:`plugins.irc.protocol`, does no I/O
(STYLE.md G4): they can be driven by the Twisted edge or by tests alike.
"""
