"""What ``GET /Table`` (no slash) and ``GET /_health`` answer: descriptions, not records."""

from __future__ import annotations

from typing import Any

import kiln
from kiln.app import App
from kiln.resource import Table
from kiln.schema import TypeRef


def _type_text(type_ref: TypeRef) -> str:
    """The attribute's type as the schema writes it (``[String!]!``)."""
    text = type_ref.name + ("!" if type_ref.item_required and type_ref.is_list else "")
    if type_ref.is_list:
        text = f"[{text}]"
    return text + ("!" if type_ref.required else "")


def describe_table(resource: Table, readable: frozenset[str] | None = None) -> dict[str, Any]:
    """The table's name, database, primary key, attributes and record count.

    ``readable`` names the attributes to describe (None: all), those a role may read.
    """
    definition = resource.definition
    attributes = []
    for attribute in definition.attributes.values():
        if readable is not None and attribute.name not in readable:
            continue
        entry: dict[str, Any] = {
            "name": attribute.name,
            "type": _type_text(attribute.type),
            "indexed": attribute.indexed or attribute.primary_key,
            "required": attribute.type.required and not attribute.primary_key,
        }
        if attribute.primary_key:
            entry["primaryKey"] = True
        if attribute.created_time:
            entry["createdTime"] = True
        if attribute.updated_time:
            entry["updatedTime"] = True
        attributes.append(entry)
    store = resource.database.tables[definition.name]
    with resource.database.read() as txn:
        count = store.count(txn)
    return {
        "name": definition.name,
        "database": definition.database,
        "table": definition.table,
        "path": f"/{resource.path}/",
        "primaryKey": definition.primary_key,
        "sealed": definition.sealed,
        "attributes": attributes,
        "recordCount": count,
    }


def health(app: App) -> dict[str, Any]:
    """The server's version, its databases with their tables, and which worker answers."""
    return {
        "status": "ok",
        "version": kiln.__version__,
        "databases": {
            name: sorted(database.tables) for name, database in sorted(app.databases.items())
        },
        "worker": app.worker,
        "workers": app.config.http.workers,
    }
