"""A throw-away PostgreSQL database for a benchmark, on the server of a DATABASE_URL."""

from __future__ import annotations

from urllib.parse import urlparse, urlunparse


def _admin_url(url: str) -> str:
    server = urlparse(url)
    return urlunparse(server._replace(path="/" + (server.path.lstrip("/") or "postgres")))


def create(url: str, name: str) -> str:
    """Create database ``name`` on ``url``'s server; its DATABASE_URL."""
    import psycopg

    with psycopg.connect(_admin_url(url), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return urlunparse(urlparse(url)._replace(path="/" + name))


def drop(url: str, name: str) -> None:
    """Drop database ``name`` on ``url``'s server, closing whatever still uses it."""
    import psycopg

    with psycopg.connect(_admin_url(url), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
