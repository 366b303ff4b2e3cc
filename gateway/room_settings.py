"""The user's room settings: persistent rooms, history settings and legacy room options.

Stored in the ``room`` table (legacy_id = the room's service, channel = the room's
legacy address) and kept in memory, so that the message path (the archive's
``record_history``) never waits for the database. A row with an empty service and
room holds the user's defaults for every room, as Biboumi's global ``configure``
(reference/biboumi.md §2.6): ``persistent``, ``record_history``, ``max_history_length``.

Setting values are strings, as data forms carry them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from gateway.store import repository
from gateway.store.db import Database

#: Biboumi's defaults (reference/biboumi.md §4, ``globaloptions_``).
DEFAULT_MAX_HISTORY_LENGTH = 20
DEFAULT_RECORD_HISTORY = True
TRUE = frozenset({"1", "true"})


@dataclass(frozen=True, slots=True)
class RoomConfig:
    persistent: bool = False
    settings: Mapping[str, str] = field(default_factory=dict)


class RoomSettings:
    """One gateway's room rows, in memory, written through to the database."""

    def __init__(self, gateway_jid: str, database: Database) -> None:
        self.gateway_jid = gateway_jid
        self.database = database
        self._rooms: dict[tuple[str, str], RoomConfig] = {}
        self._services: dict[tuple[str, str], str] = {}
        self._loaded = False
        #: The admin's default (``[gateways.NAME.archive] history_length``); Biboumi's 20 otherwise.
        self.default_max_history_length = DEFAULT_MAX_HISTORY_LENGTH

    async def load(self) -> None:
        if self._loaded:
            return
        for record in await self.database.run(repository.list_rooms, self.gateway_jid):
            self._rooms[(record.user, record.channel)] = RoomConfig(
                persistent=record.persistent, settings={str(k): str(v) for k, v in record.settings.items()})
            self._services[(record.user, record.channel)] = record.legacy_id
        self._loaded = True

    # -- reads (synchronous: the message path calls them) --------------------------------

    def get(self, user: str, room: str) -> RoomConfig:
        return self._rooms.get((user, room)) or RoomConfig()

    def defaults(self, user: str) -> RoomConfig:
        """The user's global settings (the room ``""``)."""
        return self.get(user, "")

    def persistent(self, user: str, room: str) -> bool:
        """Kept joined while the user is offline, and rejoined after a restart: the room's own
        flag, or the user's global ``persistent`` default."""
        return self.get(user, room).persistent or self.defaults(user).persistent

    def record_history(self, user: str, room: str) -> bool:
        """Whether lines of ``room`` are archived for ``user``: the room's ``record_history``
        (``true``/``false``; empty: unset), else the user's global one (default true)."""
        value = self.get(user, room).settings.get("record_history", "")
        if value:
            return value in TRUE
        default = self.defaults(user).settings.get("record_history", "")
        return default in TRUE if default else DEFAULT_RECORD_HISTORY

    def max_history_length(self, user: str, room: str) -> int:
        """How many archived lines a join replays: the room's value, else the user's global
        one, else the admin's default (20). A value that is not a number counts as unset
        (Biboumi falls back too)."""
        for config in (self.get(user, room), self.defaults(user)):
            value = config.settings.get("max_history_length", "")
            if value.strip().isdigit():
                return int(value)
        return self.default_max_history_length

    def rooms_of(self, user: str) -> dict[str, Mapping[str, str]]:
        """Every room of the user with settings, by room address (not the defaults)."""
        return {room: config.settings for (owner, room), config in self._rooms.items()
                if owner == user and room}

    def persistent_rooms(self) -> list[tuple[str, str]]:
        """(user, room) of every room to rejoin after a restart: those with their own persistent
        flag, and those joined when the user's global ``persistent`` is on."""
        return sorted((user, room) for (user, room), config in self._rooms.items()
                      if room and (config.persistent
                                   or (config.settings.get("joined") and self.defaults(user).persistent)))

    async def remember_join(self, user: str, room: str, service: str, nick: str) -> None:
        """A persistent room is joined: remember it (and the nick) for the restart."""
        if not self.persistent(user, room):
            return
        config = self.get(user, room)
        settings = {**config.settings, "nick": nick, "joined": "true"}
        if settings != dict(config.settings):
            await self.save(user, room, service, persistent=config.persistent, settings=settings)

    async def forget_join(self, user: str, room: str) -> None:
        """The room is left for good: not rejoined after a restart (unless its own flag says so)."""
        config = self._rooms.get((user, room))
        if config is None or "joined" not in config.settings:
            return
        settings = {k: v for k, v in config.settings.items() if k != "joined"}
        await self.save(user, room, self._services.get((user, room), ""), persistent=config.persistent,
                        settings=settings)

    # -- writes ------------------------------------------------------------------------------

    async def save(self, user: str, room: str, service: str, *, persistent: bool,
                   settings: Mapping[str, str]) -> None:
        """Store a room's settings (``room`` and ``service`` empty: the user's defaults)."""
        clean = {k: v for k, v in settings.items() if v != ""}
        await self.database.run(repository.save_room, self.gateway_jid, user, service, room,
                                persistent=persistent, settings=clean)
        self._rooms[(user, room)] = RoomConfig(persistent=persistent, settings=clean)
        self._services[(user, room)] = service

    async def forget_service(self, user: str, service: str) -> None:
        """The user's registration with ``service`` is gone: its rooms' settings (and persistence) too."""
        await self.database.run(repository.delete_rooms, self.gateway_jid, user, service)
        for key in [key for key, owner in self._services.items() if key[0] == user and owner == service]:
            self._rooms.pop(key, None)
            del self._services[key]

    async def forget_user(self, user: str) -> None:
        await self.database.run(repository.delete_rooms, self.gateway_jid, user)
        for key in [key for key in self._rooms if key[0] == user]:
            del self._rooms[key]
            self._services.pop(key, None)


__all__ = ["RoomConfig", "RoomSettings"]
