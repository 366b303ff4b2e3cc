"""Finding plugins: entry points in ``xmpp_gateway.plugins``, or ``package.module:Factory``.

The second form lets an admin or a test suite run a plugin that is not installed
as a distribution; it is resolved with :func:`importlib.import_module` only.
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points

from gateway.plugin import ENTRY_POINT_GROUP, PluginFactory


class PluginNotFound(LookupError):
    """No plugin by that name; the message lists the installed ones."""


def available_plugins() -> list[str]:
    return sorted(ep.name for ep in entry_points(group=ENTRY_POINT_GROUP))


def load_plugin_factory(reference: str) -> PluginFactory:
    """Resolve ``reference`` (an entry point name or ``module:attribute``) to a factory."""
    if ":" in reference:
        module_name, _, attribute = reference.partition(":")
        try:
            module = importlib.import_module(module_name)
            return getattr(module, attribute)  # type: ignore[no-any-return]
        except (ImportError, AttributeError) as exc:
            raise PluginNotFound(f"cannot load plugin {reference!r}: {exc}") from exc
    matches = entry_points(group=ENTRY_POINT_GROUP, name=reference)
    for entry_point in matches:
        return entry_point.load()  # type: ignore[no-any-return]
    installed = ", ".join(available_plugins()) or "none"
    raise PluginNotFound(f"no plugin named {reference!r} (installed: {installed})")
