"""Command line: ``xmpp-gateway run | check-config | db upgrade | gen-key | plugins``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from gateway import __version__
from gateway.config import ConfigError, load_config

DEMO_DIRECTORY = "xmpp-gateway-demo"


def _install_reactor() -> None:
    """The asyncio reactor, so plugins and tests can share one loop with asyncio libraries."""
    from twisted.internet import asyncioreactor

    asyncioreactor.install()


def _run(args: argparse.Namespace) -> int:
    from gateway.app import StartupError, configure_logging, run

    if args.config is None:
        from gateway.demo import run_demo

        return run_demo(Path(args.directory))
    config = load_config(args.config)
    configure_logging(config.logging)
    _install_reactor()
    from twisted.internet import reactor

    try:
        return run(config, reactor)  # type: ignore[arg-type]
    except StartupError as exc:
        print(f"xmpp-gateway: {exc}", file=sys.stderr)
        return 2


def _check_config(args: argparse.Namespace) -> int:
    from twisted.internet.task import Clock

    from gateway.plugin import PluginContext
    from gateway.plugins import PluginNotFound, load_plugin_factory

    config = load_config(args.file)
    for gateway in config.gateways:
        try:
            factory = load_plugin_factory(gateway.plugin)
        except PluginNotFound as exc:
            raise ConfigError(config.source, f"gateways.{gateway.name}.plugin", str(exc)) from exc
        # The plugin checks its own options table when it is built: build it, unconnected.
        context = PluginContext(gateway_jid=gateway.jid, options=gateway.options,
                                events=_DiscardEvents(), clock=Clock())
        try:
            factory(context)
        except (ValueError, TypeError) as exc:
            raise ConfigError(config.source, f"gateways.{gateway.name}.options", str(exc)) from exc
    if config.security.credentials_key:
        from gateway.store.crypto import CredentialCipher

        try:
            CredentialCipher(config.security.credentials_key)
        except ValueError as exc:
            raise ConfigError(config.source, "security.credentials_key", str(exc)) from exc
    names = ", ".join(f"{g.name} ({g.jid}, plugin {g.plugin})" for g in config.gateways)
    print(f"{config.source}: OK: {names}")
    return 0


class _DiscardEvents:
    """Events of a plugin built only to check its options go nowhere."""

    def emit(self, event: object) -> None:
        return None


def _db_upgrade(args: argparse.Namespace) -> int:
    from gateway.store.db import create_engine_for, upgrade_to_head

    url = args.url or load_config(args.config).database.url
    engine = create_engine_for(url)
    try:
        print(f"database at revision {upgrade_to_head(engine)}")
    finally:
        engine.dispose()
    return 0


def _gen_key(args: argparse.Namespace) -> int:
    from gateway.store.crypto import generate_key

    print(generate_key())
    return 0


def _plugins(args: argparse.Namespace) -> int:
    from gateway.plugins import available_plugins

    print("\n".join(available_plugins()))
    return 0


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="xmpp-gateway", description=__doc__)
    top.add_argument("--version", action="version", version=f"xmpp-gateway {__version__}")
    commands = top.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="run the gateway (without --config: a self-contained demo)")
    run.add_argument("--config", type=Path, help="TOML configuration file")
    run.add_argument("--directory", default=DEMO_DIRECTORY,
                     help="demo state directory (default: %(default)s)")
    run.set_defaults(func=_run)

    check = commands.add_parser("check-config", help="validate a configuration file")
    check.add_argument("file", type=Path)
    check.set_defaults(func=_check_config)

    db = commands.add_parser("db", help="database maintenance")
    db_commands = db.add_subparsers(dest="db_command", required=True)
    upgrade = db_commands.add_parser("upgrade", help="upgrade the schema to the newest revision")
    source = upgrade.add_mutually_exclusive_group(required=True)
    source.add_argument("--config", type=Path, help="take the database URL from this file")
    source.add_argument("--url", help="database URL")
    upgrade.set_defaults(func=_db_upgrade)

    key = commands.add_parser("gen-key", help="print a new key for security.credentials_key")
    key.set_defaults(func=_gen_key)

    plugins = commands.add_parser("plugins", help="list the installed plugins")
    plugins.set_defaults(func=_plugins)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return int(args.func(args))
    except ConfigError as exc:
        print(f"xmpp-gateway: configuration error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
