"""The PostgreSQL fixtures (a throwaway database, a fresh schema per test), shared with tests/multiworker."""

from pg_fixtures import pg_admin, pg_database, pg_url  # noqa: F401  (fixtures, found by pytest by name)
