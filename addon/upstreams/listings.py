"""The model lists of several servers: each server's last good list (`ServerList`, `next_list`), and
the merged list the discovery routes show (`merge_listings`: the catalog first, then each server's)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from addon.catalog.models import ModelInfo, full_name, infer


@dataclass(frozen=True, slots=True)
class ServerList:
    """One server's model list as last known: its last good entries survive failed fetches."""

    entries: Mapping[str, Mapping[str, Any]] | None = None  # upstream id → its /models entry; None: never listed
    error: str | None = None  # why the latest fetch failed; None: it succeeded (or none was made)
    fetched_at: float | None = None  # clock time of the last good list

    @property
    def ids(self) -> frozenset[str]:
        return frozenset(self.entries) if self.entries is not None else frozenset()


def next_list(previous: ServerList, outcome: Mapping[str, Mapping[str, Any]] | BaseException, now: float) -> ServerList:
    """A server's list after a fetch: the new entries, or on failure the last good ones with the error."""
    if isinstance(outcome, BaseException):
        message = str(outcome) or type(outcome).__name__
        return ServerList(previous.entries, message, previous.fetched_at)
    return ServerList(dict(outcome), None, now)


def listed_by(lists: Mapping[str, ServerList]) -> dict[str, frozenset[str]]:
    """Server name → the ids of its last good list: what `ServerTable.route` reads."""
    return {name: lst.ids for name, lst in lists.items() if lst.entries is not None}


@dataclass(frozen=True, slots=True)
class MergedListing:
    """Every model the clients can see: the catalog's, then each server's (in configuration order)."""

    models: list[ModelInfo]  # catalog entries first, then the servers' models, no name twice
    served_by: dict[str, tuple[str, ...]]  # full name → the servers listing it (a catalog pin: its server)
    errors: dict[str, str]  # server → why its latest fetch failed (its last good list may still be shown)
    unlisted: tuple[str, ...]  # servers whose list has never been fetched: their models are missing

    @property
    def error(self) -> str | None:
        """Like a single list's error: set when some server's models are missing."""
        if not self.unlisted:
            return None
        return "; ".join(
            f"server {name}: {self.errors.get(name) or 'its model list is not known yet'}" for name in self.unlisted
        )


def merge_listings(
    catalog: Iterable[ModelInfo], lists: Sequence[tuple[str, ServerList]], *, show_servers: bool = True
) -> MergedListing:
    """Merge the catalog's models (`ModelInfo`, first, in file order) with each server's last good list.

    `lists` is in configuration order; a model several servers list appears once (described by the
    first server's entry). Each server's models come newest first, as with one upstream.
    `show_servers` False (list_upstream_models off): only the catalog is listed.
    """
    models = list(catalog)
    names = {m.name for m in models}
    served_by: dict[str, list[str]] = {}
    for name, lst in lists:
        for model_id in lst.entries or ():
            served_by.setdefault(full_name(model_id), []).append(name)
            if model_id != full_name(model_id):
                served_by.setdefault(model_id, []).append(name)
    if show_servers:
        for _, lst in lists:
            if not lst.entries:
                continue
            own = [infer(i, dict(e)) for i, e in lst.entries.items()]
            own.sort(key=lambda m: (-(m.created or 0), m.name))
            for model in own:
                if model.name not in names:
                    names.add(model.name)
                    models.append(model)
    final: dict[str, tuple[str, ...]] = {}
    for model in models:
        if model.server:
            final[model.name] = (model.server,)
        else:
            final[model.name] = tuple(served_by.get(model.name) or served_by.get(model.upstream) or ())
    errors = {name: lst.error for name, lst in lists if lst.error}
    unlisted = tuple(name for name, lst in lists if lst.entries is None) if show_servers else ()
    return MergedListing(models, final, errors, unlisted)
