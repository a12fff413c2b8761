"""A table of the catalog checked field by field: only known fields, each of its type, and never a
key written in the file (keys live in environment variables, named by the table)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from mitmproxy.exceptions import OptionsError

FieldTypes = Mapping[str, tuple[type, str]]  # field → (its type, how the error names it)


def checked_table(
    table: object, where: str, fields: FieldTypes, *, refused: Iterable[str], env_field: str
) -> dict[str, Any]:
    """`table` itself when it is a table of known `fields` of their types; else an `OptionsError`
    naming `where`. A field in `refused` (a key's value) is refused, pointing to `env_field`."""
    if not isinstance(table, dict):
        raise OptionsError(f"{where} must be a table")
    refused = frozenset(refused)
    for name, value in table.items():
        if name in refused:
            raise OptionsError(
                f"{where}: {name} is refused: a key never goes in the file. Put it in an environment "
                f"variable and give that variable's name as {env_field}"
            )
        if name not in fields:
            raise OptionsError(f"{where}: unknown key {name!r} (known: {', '.join(fields)})")
        wanted, said = fields[name]
        if not isinstance(value, wanted) or (wanted is not bool and isinstance(value, bool)):
            raise OptionsError(f"{where}: {name} must be {said}")
    return table
