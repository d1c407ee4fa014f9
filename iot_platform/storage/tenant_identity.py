"""Names and passwords of the per-tenant database roles (pure).

Role names: ``<prefix><slug>`` where the slug is the tenant id lowercased with every character
outside ``[a-z0-9_]`` replaced by ``_``. Whenever that changes the id (upper case, ``-``) or the
name would pass PostgreSQL's 63-byte limit, a ``-`` and 10 hex digits of the SHA-256 of the exact
tenant id are appended, so ``Acme`` and ``acme`` never share a role. Plain names never contain
``-``, so no tenant id can be chosen to take another tenant's hashed name. Names are always quoted
with ``psycopg2.sql.Identifier``; the slug keeps them readable.

Passwords: ``base64url(HMAC-SHA256(key, "iot-platform role password v1:" + role_name))``, 43
characters. The key is the ``IOT_TENANT_PASSWORD_KEY`` setting; anyone holding it can derive every
password, so it is kept like the platform's own database password. Rotating the key and running
``iot-platform tenants sync`` changes every password. Derivation (instead of stored random
passwords) means nothing to store, and Grafana's per-tenant data sources can be recreated at any
time with the same credentials.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re

MAX_ROLE_NAME_BYTES = 63  # NAMEDATALEN - 1
_UNSAFE = re.compile(r"[^a-z0-9_]")
_HASH_CHARS = 10
_PASSWORD_CONTEXT = b"iot-platform role password v1:"


def role_name_for(tenant_id: str, prefix: str = "tenant_") -> str:
    """The login role of ``tenant_id``: deterministic, at most 63 bytes, distinct per tenant id."""
    if not tenant_id:
        raise ValueError("a tenant id cannot be empty")
    if not prefix or _UNSAFE.search(prefix) or len(prefix) > 20:
        raise ValueError(f"role prefix {prefix!r} must be 1-20 characters of [a-z0-9_]")
    slug = _UNSAFE.sub("_", tenant_id.lower())
    plain = prefix + slug
    if slug == tenant_id and len(plain.encode()) <= MAX_ROLE_NAME_BYTES:
        return plain
    digest = hashlib.sha256(tenant_id.encode()).hexdigest()[:_HASH_CHARS]
    room = MAX_ROLE_NAME_BYTES - len(prefix) - 1 - _HASH_CHARS
    return f"{prefix}{slug[:room]}-{digest}"


def derive_password(key: str, role_name: str) -> str:
    """The password of ``role_name`` under ``key`` (see the module docstring)."""
    if not key:
        raise ValueError("the password key is empty: set IOT_TENANT_PASSWORD_KEY")
    mac = hmac.new(key.encode(), _PASSWORD_CONTEXT + role_name.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).decode().rstrip("=")
