"""Rows written a batch at a time: one statement per batch of model instances, whatever its size.

On PostgreSQL each column travels as one array and unnest() turns the arrays back into rows: the statement's text
is the same for every batch (parsed once), where Django's bulk_update builds a CASE per field with a branch per
row, which costs more to build and to plan than to run. Elsewhere (SQLite) Django's bulk methods do the job.
"""

from django.db import connections, router


def _columns(model, names, connection):
    fields = [model._meta.get_field(name) for name in names]
    return fields, [(field.column, field.db_type(connection)) for field in fields]


def _arrays(objs, fields, connection):
    return [[field.get_db_prep_save(getattr(obj, field.attname), connection) for obj in objs] for field in fields]


def rows_insert(model, objs, names, *, ignore_conflicts=False):
    """INSERT the instances' `names` columns; rows that would break a unique constraint are left out when
    `ignore_conflicts`. The instances get no primary key back."""
    if not objs:
        return
    using = router.db_for_write(model)
    connection = connections[using]
    if connection.vendor != "postgresql":
        model.objects.using(using).bulk_create(objs, ignore_conflicts=ignore_conflicts)
        return
    fields, columns = _columns(model, names, connection)
    quote = connection.ops.quote_name
    query = "INSERT INTO {table} ({names}) SELECT * FROM unnest({arrays}){conflict}".format(
        table=quote(model._meta.db_table), names=", ".join(quote(column) for column, _type in columns),
        arrays=", ".join(f"%s::{db_type}[]" for _column, db_type in columns),
        conflict=" ON CONFLICT DO NOTHING" if ignore_conflicts else "",
    )
    with connection.cursor() as cursor:
        cursor.execute(query, _arrays(objs, fields, connection))


def rows_update(model, objs, names):
    """UPDATE the instances' `names` columns, each row by its primary key."""
    if not objs:
        return
    using = router.db_for_write(model)
    connection = connections[using]
    if connection.vendor != "postgresql":
        model.objects.using(using).bulk_update(objs, names)
        return
    pk = model._meta.pk
    fields, columns = _columns(model, [pk.name, *names], connection)
    quote = connection.ops.quote_name
    aliases = [f"value_{number}" for number in range(len(columns))]
    query = "UPDATE {table} AS target SET {sets} FROM unnest({arrays}) AS source ({aliases}) " \
            "WHERE target.{pk} = source.value_0".format(
                table=quote(model._meta.db_table),
                sets=", ".join(f"{quote(column)} = source.{alias}"
                               for (column, _type), alias in zip(columns[1:], aliases[1:], strict=True)),
                arrays=", ".join(f"%s::{db_type}[]" for _column, db_type in columns),
                aliases=", ".join(aliases), pk=quote(pk.column))
    with connection.cursor() as cursor:
        cursor.execute(query, _arrays(objs, fields, connection))
