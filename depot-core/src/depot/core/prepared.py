"""Statements prepared once: a SQLAlchemy template compiled once per database, run with values.

Running a statement through SQLAlchemy and ``databases`` costs far more CPU than the database
spends on a small write: building it (``.values()``, ``.where()``), keying it
(``_generate_cache_key()``), looking its compiled form up, constructing its parameters, then
``databases``' wrapping of the call. In SQLite's group commit that was 90 to 200 µs of CPU per
statement against about 6 µs for the same INSERT through ``sqlite3`` directly, and a publish
runs about a dozen statements; prepared, 10 to 16 µs.

A *template* is an ordinary statement built once (a module constant, or one of the shared
statements of :meth:`depot.core.database.Database.insert_or_ignore`) whose varying values are
bind parameters, ``sa.bindparam("name")``. ``db.execute(template, values)`` (and
``fetch_one``, ``fetch_all``, ``fetch_val``) compiles it once per database (a
:class:`Prepared`), and on each call only turns ``values`` into the driver's positional
arguments, through the type processors SQLAlchemy would apply (JSON, ...). The SQL text and the
arguments are those ``databases`` sends for the same statement with the values filled in.

Keys of ``values`` that name no bind parameter of an INSERT or UPDATE are column values, as in
``databases``' ``execute(insert, values)``: ``db.execute(db.insert_or_ignore(table), row)``.
Values that SQLAlchemy renders into the SQL text (``IN`` lists, ``literal_execute``) cannot be
templated; such statements are built per call, as before.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from databases.backends.common.records import create_column_maps
from sqlalchemy.sql import visitors
from sqlalchemy.sql.elements import BindParameter

#: What fills one placeholder: the key of ``values`` (None: a constant of the template), the
#: constant (already processed) and the type's bind processor.
_Slot = tuple[str | None, Any, Callable[[Any], Any] | None]


def bind_names(statement: Any) -> set[str]:
    """The names of the bind parameters ``statement`` was built with (``sa.bindparam``)."""
    return {
        element.key
        for element in visitors.iterate(statement)
        if isinstance(element, BindParameter) and not element.unique
    }


class Prepared:
    """A template compiled for one dialect, for values with the keys ``names``.

    ``sql`` is the text to send; :meth:`args` the arguments for one call, in the order of its
    placeholders (``?`` on SQLite, ``$1`` ... on PostgreSQL through asyncpg, numbered as
    ``databases`` numbers them: by parameter name).
    """

    __slots__ = (
        "source", "names", "compiled", "sql", "result_columns", "column_maps", "_slots", "metadata",
    )  # fmt: skip

    def __init__(self, source: Any, names: Sequence[str], dialect: sa.engine.Dialect) -> None:
        self.source = source
        self.names = tuple(names)
        statement = source
        columns = [name for name in self.names if name not in bind_names(source)]
        if columns:
            if not isinstance(source, (sa.Insert, sa.Update)):
                raise ValueError(f"values {columns} name no bind parameter of the statement")
            statement = source.values({name: sa.bindparam(name) for name in columns})
        compiled = statement.compile(dialect=dialect)
        # The names placeholders carry (``binds`` also holds anonymous names before truncation).
        binds = {name: bind for bind, name in compiled.bind_names.items()}
        if compiled.positional:
            order = list(compiled.positiontup or ())
            self.sql = compiled.string
        else:  # pyformat, which databases' asyncpg backend numbers by sorted name
            order = sorted(binds)
            self.sql = compiled.string % {n: f"${i}" for i, n in enumerate(order, start=1)}
        processors = compiled._bind_processors
        slots: list[_Slot] = []
        for name in order:
            bind = binds[name]
            if bind.expanding or bind.literal_execute or bind.callable is not None:
                raise ValueError(f"{name}: a value rendered per call cannot be templated")
            processor = processors.get(name)
            if bind.key in self.names:
                slots.append((bind.key, None, processor))
            elif bind.required:
                raise KeyError(f"the statement needs a value for {bind.key!r}")
            else:
                value = bind.effective_value
                slots.append((None, value if processor is None else processor(value), None))
        self._slots = tuple(slots)
        self.compiled = compiled
        self.result_columns = compiled._result_columns
        self.column_maps = create_column_maps(self.result_columns)
        #: What the database's driver needs to read result rows, made at the first call.
        self.metadata: Any = None

    def args(self, values: Mapping[str, Any]) -> list[Any]:
        """The driver's arguments for one call."""
        return [
            constant if key is None else (values[key] if convert is None else convert(values[key]))
            for key, constant, convert in self._slots
        ]
