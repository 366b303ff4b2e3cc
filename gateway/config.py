"""Configuration: a TOML file turned into typed, frozen objects.

Every problem is reported as :class:`ConfigError` naming the file, the dotted
key and what is wrong, so an admin never has to guess. Secrets may be given
inline or, better, through environment variables (``secret_env``,
``credentials_key_env``). Unknown keys are errors: a typo must not silently
fall back to a default.
"""

from __future__ import annotations

import copy
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal, TypeVar

from twisted.words.protocols.jabber.jid import InvalidFormat

from gateway.jids import parse_jid

LogLevel = Literal["debug", "info", "warning", "error"]
LOG_LEVELS = ("debug", "info", "warning", "error")

DEFAULT_MAX_BACKOFF = 60.0
DEFAULT_QUEUE_SIZE = 1000
#: Prosody's default c2s stanza limit; the server enforces its own on the component link too.
DEFAULT_MAX_STANZA_SIZE = 256 * 1024
DEFAULT_KEEPALIVE = 60.0


class ConfigError(Exception):
    """A configuration problem: which file, which key, what is wrong."""

    def __init__(self, source: str, key: str, problem: str) -> None:
        self.source = source
        self.key = key
        self.problem = problem
        super().__init__(f"{source}: {key}: {problem}" if key else f"{source}: {problem}")


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerConfig:
    """Where the XMPP server listens for components (XEP-0114)."""

    host: str = "127.0.0.1"
    port: int = 5347


DEFAULT_DATABASE_URL = "sqlite:///xmpp-gateway-state/gateway.sqlite3"


@dataclass(frozen=True, slots=True, kw_only=True)
class DatabaseConfig:
    url: str = DEFAULT_DATABASE_URL
    """A relative SQLite path is relative to the working directory."""
    auto_upgrade: bool = True


@dataclass(frozen=True, slots=True, kw_only=True)
class LoggingConfig:
    level: LogLevel = "info"
    file: str = ""
    """Empty: standard error."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SecurityConfig:
    credentials_key: str = field(default="", repr=False)
    """Fernet key that encrypts legacy credentials at rest."""
    admins: tuple[str, ...] = ()
    """Bare JIDs allowed to run the XEP-0133 admin commands."""


DEFAULT_ARCHIVE_MAX_AGE_DAYS = 90
DEFAULT_HISTORY_LENGTH = 20
DEFAULT_ARCHIVE_FLUSH_INTERVAL = 0.5
DEFAULT_ARCHIVE_BATCH_SIZE = 500


@dataclass(frozen=True, slots=True, kw_only=True)
class ArchiveConfig:
    """``[gateways.NAME.archive]``: the per-user message archive (XEP-0313, history on join)."""

    enabled: bool = True
    max_age_days: int = DEFAULT_ARCHIVE_MAX_AGE_DAYS
    """Lines older than this are pruned; 0 keeps them forever."""
    history_length: int = DEFAULT_HISTORY_LENGTH
    """Lines of history sent on join when the client asks for no number (XEP-0045 §7.2.15)."""
    flush_interval: float = DEFAULT_ARCHIVE_FLUSH_INTERVAL
    """Seconds a recorded line may wait in memory before its batch is written."""
    batch_size: int = DEFAULT_ARCHIVE_BATCH_SIZE
    """Rows written in one transaction; a full batch is written at once."""


@dataclass(frozen=True, slots=True, kw_only=True)
class GatewayConfig:
    """One plugin instance attached to the server under its own component JID."""

    name: str
    """The ``[gateways.NAME]`` table name."""
    plugin: str
    """Entry point name in ``xmpp_gateway.plugins``, or ``package.module:Factory``."""
    jid: str
    secret: str = field(repr=False)
    server: ServerConfig
    display_name: str = ""
    max_backoff: float = DEFAULT_MAX_BACKOFF
    queue_size: int = DEFAULT_QUEUE_SIZE
    max_stanza_size: int = DEFAULT_MAX_STANZA_SIZE
    keepalive: float = DEFAULT_KEEPALIVE
    registration_changes: bool = True
    """Whether registered users may change their registration (XEP-0077 §3.3 ``not-allowed``)."""
    allowed_users: tuple[str, ...] = ()
    """Domains (``example.org``) or JID patterns (``*@example.org``, ``alice@example.org``);
    empty allows everyone."""
    archive: ArchiveConfig = field(default_factory=ArchiveConfig)
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class Config:
    source: str
    database: DatabaseConfig
    logging: LoggingConfig
    security: SecurityConfig
    gateways: tuple[GatewayConfig, ...]


T = TypeVar("T")


class _Reader:
    """Reads one table, remembering the dotted path for error messages."""

    def __init__(self, source: str, path: str, table: Mapping[str, Any]) -> None:
        self.source = source
        self.path = path
        self.table = table
        self.seen: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def error(self, name: str, problem: str) -> ConfigError:
        return ConfigError(self.source, self.key(name), problem)

    def get(self, name: str, kind: type[T], default: T, check: Callable[[T], str | None] | None = None) -> T:
        self.seen.add(name)
        if name not in self.table:
            return default
        value = self.table[name]
        # bool is an int subclass and int is acceptable where a float is asked for.
        ok = isinstance(value, kind) and not (kind is int and isinstance(value, bool))
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value, ok = float(value), True
        if not ok:
            raise self.error(name, f"expected {_kind_name(kind)}, got {_describe(value)}")
        if check is not None and (problem := check(value)):
            raise self.error(name, problem)
        return value

    def required(self, name: str, kind: type[T], check: Callable[[T], str | None] | None = None) -> T:
        if name not in self.table:
            self.seen.add(name)
            raise self.error(name, "is required")
        return self.get(name, kind, None, check)  # type: ignore[arg-type]

    def table_of(self, name: str) -> _Reader:
        value = self.get(name, dict, {})
        return _Reader(self.source, self.key(name), value)

    def strings(self, name: str) -> tuple[str, ...]:
        values = self.get(name, list, [])
        for index, item in enumerate(values):
            if not isinstance(item, str):
                raise self.error(name, f"item {index} must be a string, got {_describe(item)}")
        return tuple(values)

    def secret(self, name: str, *, required: bool) -> str:
        """A secret given inline (``name``) or through an environment variable (``name_env``)."""
        inline = self.get(name, str, "")
        env_name = self.get(f"{name}_env", str, "")
        if inline and env_name:
            raise self.error(name, f"give either {name} or {name}_env, not both")
        if env_name:
            value = os.environ.get(env_name, "")
            if not value:
                raise self.error(f"{name}_env", f"environment variable {env_name} is not set or empty")
            return value
        if required and not inline:
            raise self.error(name, f"is required (or {name}_env naming an environment variable)")
        return inline

    def finish(self) -> None:
        unknown = sorted(set(self.table) - self.seen)
        if unknown:
            raise self.error(unknown[0], "unknown key")


def _kind_name(kind: type) -> str:
    return {str: "a string", int: "an integer", float: "a number", bool: "true or false",
            dict: "a table", list: "an array"}.get(kind, kind.__name__)


def _describe(value: object) -> str:
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    return f"{type(value).__name__} {value!r}"


def _port(value: int) -> str | None:
    return None if 1 <= value <= 65535 else f"must be between 1 and 65535, got {value}"


def _positive(value: float) -> str | None:
    return None if value > 0 else f"must be greater than 0, got {value}"


def _not_negative(value: float) -> str | None:
    return None if value >= 0 else f"must be 0 or more, got {value}"


def _batch_size(value: int) -> str | None:
    return None if 1 <= value <= 10000 else f"must be between 1 and 10000, got {value}"


def _read_archive(table: _Reader) -> ArchiveConfig:
    archive = table.table_of("archive")
    config = ArchiveConfig(
        enabled=archive.get("enabled", bool, True),
        max_age_days=archive.get("max_age_days", int, DEFAULT_ARCHIVE_MAX_AGE_DAYS, _not_negative),
        history_length=archive.get("history_length", int, DEFAULT_HISTORY_LENGTH, _not_negative),
        flush_interval=archive.get("flush_interval", float, DEFAULT_ARCHIVE_FLUSH_INTERVAL, _positive),
        batch_size=archive.get("batch_size", int, DEFAULT_ARCHIVE_BATCH_SIZE, _batch_size),
    )
    archive.finish()
    return config


def _jid(value: str) -> str | None:
    try:
        parsed = parse_jid(value)
    except InvalidFormat as exc:
        return f"{value!r} is not a valid JID ({exc})"
    if parsed.user or parsed.resource:
        return f"{value!r} must be a bare domain such as gateway.example.org"
    return None


_PATTERN = re.compile(r"^(\*@)?[^@/\s*]+$|^[^@/\s*]+@[^@/\s*]+$")


def _user_pattern(value: str) -> str | None:
    return None if _PATTERN.match(value) else f"{value!r} is not a domain, *@domain or user@domain"


def _read_gateway(root: _Reader, name: str, server: ServerConfig) -> GatewayConfig:
    table = root.table_of("gateways").table_of(name)
    server_table = table.table_of("server")
    gw_server = ServerConfig(
        host=server_table.get("host", str, server.host),
        port=server_table.get("port", int, server.port, _port),
    )
    server_table.finish()
    allowed = table.strings("allowed_users")
    for item in allowed:
        if problem := _user_pattern(item):
            raise table.error("allowed_users", problem)
    config = GatewayConfig(
        name=name,
        plugin=table.get("plugin", str, name),
        jid=str(parse_jid(table.required("jid", str, _jid))),
        secret=table.secret("secret", required=True),
        server=gw_server,
        display_name=table.get("display_name", str, ""),
        max_backoff=table.get("max_backoff", float, DEFAULT_MAX_BACKOFF, _positive),
        queue_size=table.get("queue_size", int, DEFAULT_QUEUE_SIZE, _positive),
        max_stanza_size=table.get("max_stanza_size", int, DEFAULT_MAX_STANZA_SIZE, _positive),
        keepalive=table.get("keepalive", float, DEFAULT_KEEPALIVE, _positive),
        allowed_users=allowed,
        registration_changes=table.get("registration_changes", bool, True),
        archive=_read_archive(table),
        # A private, read-only copy: the frozen config must not share mutable state.
        options=MappingProxyType(copy.deepcopy(table.get("options", dict, {}))),
    )
    table.finish()
    return config


def parse_config(data: Mapping[str, Any], source: str = "<config>") -> Config:
    """Build a :class:`Config` from an already parsed TOML document."""
    root = _Reader(source, "", data)

    server_table = root.table_of("server")
    server = ServerConfig(
        host=server_table.get("host", str, "127.0.0.1"),
        port=server_table.get("port", int, 5347, _port),
    )
    server_table.finish()

    db_table = root.table_of("database")
    database = DatabaseConfig(
        url=db_table.get("url", str, DEFAULT_DATABASE_URL, _database_url),
        auto_upgrade=db_table.get("auto_upgrade", bool, True),
    )
    db_table.finish()

    log_table = root.table_of("logging")
    logging = LoggingConfig(
        level=log_table.get("level", str, "info", _log_level),  # type: ignore[arg-type]
        file=log_table.get("file", str, ""),
    )
    log_table.finish()

    sec_table = root.table_of("security")
    admins = sec_table.strings("admins")
    for admin in admins:
        if _jid_any(admin):
            raise sec_table.error("admins", f"{admin!r} is not a valid bare JID")
    security = SecurityConfig(
        credentials_key=sec_table.secret("credentials_key", required=False), admins=admins
    )
    sec_table.finish()

    names = list(root.get("gateways", dict, {}))
    gateways = tuple(_read_gateway(root, name, server) for name in names)
    if not gateways:
        raise ConfigError(source, "gateways", "at least one [gateways.NAME] table is required")
    seen: dict[str, str] = {}
    for gateway in gateways:
        if gateway.jid in seen:
            raise ConfigError(
                source, f"gateways.{gateway.name}.jid",
                f"{gateway.jid} is already used by gateways.{seen[gateway.jid]}",
            )
        seen[gateway.jid] = gateway.name
    root.finish()
    return Config(source=source, database=database, logging=logging, security=security,
                  gateways=gateways)


def _database_url(value: str) -> str | None:
    if value.startswith(("sqlite://", "postgresql://", "postgresql+psycopg://")):
        return None
    return f"{value!r} is not supported: use sqlite:///PATH or postgresql+psycopg://USER@HOST/DB"


def _log_level(value: str) -> str | None:
    return None if value in LOG_LEVELS else f"must be one of {', '.join(LOG_LEVELS)}, got {value!r}"


def _jid_any(value: str) -> str | None:
    try:
        parsed = parse_jid(value)
    except InvalidFormat:
        return "invalid"
    return "has a resource" if parsed.resource else None


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read and validate a TOML configuration file."""
    source = str(path)
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(source, "", f"cannot read file: {exc.strerror}") from exc
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(source, "", f"not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(source, "", f"invalid TOML: {exc}") from exc
    return parse_config(data, source)
