"""Fixtures shared by the HES store tests: every test that uses ``db_url``
(or a fixture built on it) runs once against SQLite and once against
PostgreSQL.

PostgreSQL: one cluster per test session (``tests/pg_cluster.py``, started
on first use), a template database migrated once, and a fresh database per
test copied from it (CREATE DATABASE … TEMPLATE), dropped afterwards.
"""

from __future__ import annotations

import pytest

from tests.pg_cluster import running_cluster

STORES = ["sqlite", "postgresql"]
TEMPLATE = "hes_template"


@pytest.fixture(scope="session")
def pg_cluster():
    yield from running_cluster()


@pytest.fixture(scope="session")
def pg_template(pg_cluster):
    from hes_lite.store import open_store
    open_store(pg_cluster.create_database(TEMPLATE)).close()
    return TEMPLATE


@pytest.fixture
def pg_url(pg_cluster, pg_template):
    """A fresh, migrated PostgreSQL database for one test."""
    url = pg_cluster.create_database(template=pg_template)
    yield url
    pg_cluster.drop_database(url.rsplit("/", 1)[1])


@pytest.fixture(params=STORES)
def db_url(request, tmp_path):
    """A fresh database URL, once per store."""
    if request.param == "sqlite":
        return "sqlite:///%s" % (tmp_path / "hes.db")
    return request.getfixturevalue("pg_url")


@pytest.fixture(scope="module", params=STORES)
def module_db_url(request, tmp_path_factory):
    """A database URL for a whole module, once per store."""
    if request.param == "sqlite":
        yield "sqlite:///%s" % (tmp_path_factory.mktemp("store") / "hes.db")
        return
    pg = request.getfixturevalue("pg_cluster")
    url = pg.create_database(template=request.getfixturevalue("pg_template"))
    yield url
    pg.drop_database(url.rsplit("/", 1)[1])
