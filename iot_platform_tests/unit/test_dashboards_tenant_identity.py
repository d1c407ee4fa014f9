"""Tenant role names and derived passwords (pure)."""

from __future__ import annotations

import pytest

from iot_platform.storage.tenant_identity import MAX_ROLE_NAME_BYTES, derive_password, role_name_for


@pytest.mark.parametrize(
    ("tenant", "expected"),
    [("acme", "tenant_acme"), ("acme_2", "tenant_acme_2"), ("42", "tenant_42")],
)
def test_safe_ids_keep_readable_names(tenant: str, expected: str) -> None:
    """A tenant id that is already lower-case [a-z0-9_] maps to prefix + id."""
    assert role_name_for(tenant) == expected


@pytest.mark.parametrize("tenant", ["Acme", "ac-me", "x" * 64, "ACME", "é"])
def test_other_ids_get_a_hash_suffix(tenant: str) -> None:
    """Case changes, unsafe characters or length add '-' and a hash of the exact id, within 63 bytes."""
    name = role_name_for(tenant)
    assert "-" in name and len(name.encode()) <= MAX_ROLE_NAME_BYTES and name == role_name_for(tenant)


def test_names_are_distinct_per_tenant() -> None:
    """Ids that lowercase or sanitise alike still get different roles; no id can take a hashed name."""
    tenants = ["acme", "Acme", "ACME", "ac-me", "ac_me", "x" * 64, "x" * 63 + "y"]
    names = [role_name_for(t) for t in tenants]
    assert len(set(names)) == len(tenants)
    hashed = role_name_for("Acme")
    assert role_name_for(hashed.removeprefix("tenant_")) != hashed  # '-' never survives as plain


@pytest.mark.parametrize("prefix", ["", "Tenant_", "t-", "x" * 21])
def test_bad_prefixes_are_refused(prefix: str) -> None:
    """The prefix must itself be a safe, short identifier part."""
    with pytest.raises(ValueError):
        role_name_for("acme", prefix)


def test_passwords_are_derived_per_role_and_key() -> None:
    """Same key and role give the same password; another role or key gives another; no key is an error."""
    first = derive_password("key", "tenant_acme")
    assert first == derive_password("key", "tenant_acme") and len(first) == 43
    assert first != derive_password("key", "tenant_beta")
    assert first != derive_password("other", "tenant_acme")
    with pytest.raises(ValueError):
        derive_password("", "tenant_acme")
