"""Credentials: encrypted at rest with a key kept outside the store, masked on display."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from kortix_lab.mcp import secrets
from kortix_lab.mcp.secrets import (
    SecretBox,
    SecretError,
    decrypt_entry,
    encrypt_entry,
    mask,
    masked_entry,
)

SECRET = "sk-live-0123456789abcd"


def test_env_and_header_values_are_encrypted_in_every_shape(kortix_home: Path) -> None:
    entries = [
        {"name": "a", "command": "x", "env": {"TOKEN": SECRET, "PORT": 8080}},
        {"mcpServers": {"b": {"url": "http://h/mcp", "headers": {"Authorization": SECRET}}}},
        {"name": "c", "type": "http", "config": {"url": "http://h", "headers": {"K": SECRET}}},
    ]
    for entry in entries:
        sealed = encrypt_entry(entry)
        assert SECRET not in json.dumps(sealed) and "enc:v1:" in json.dumps(sealed)
        assert encrypt_entry(sealed) == sealed  # idempotent
        opened = decrypt_entry(sealed)
        assert SECRET in json.dumps(opened)
    assert decrypt_entry(encrypt_entry(entries[0]))["env"]["PORT"] == "8080"


def test_the_key_file_is_created_once_with_mode_0600(kortix_home: Path) -> None:
    secrets._boxes.clear()
    box = SecretBox.default()
    key_file = kortix_home / "secret.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    token = box.encrypt(SECRET)
    secrets._boxes.clear()
    assert SecretBox.default().decrypt(token) == SECRET  # same key read back


def test_the_environment_key_wins_and_a_wrong_key_says_so(
        kortix_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KORTIX_LAB_SECRET_KEY", "a passphrase that is long enough")
    sealed = encrypt_entry({"name": "a", "command": "x", "env": {"T": SECRET}})
    assert not (kortix_home / "secret.key").exists()
    monkeypatch.setenv("KORTIX_LAB_SECRET_KEY", "another passphrase entirely")
    with pytest.raises(SecretError, match="KORTIX_LAB_SECRET_KEY") as info:
        decrypt_entry(sealed)
    assert SECRET not in str(info.value)
    assert masked_entry(sealed)["env"]["T"].startswith("••••")


def test_masking_shows_at_most_the_last_four_characters(kortix_home: Path) -> None:
    assert mask(SECRET) == "••••abcd"
    assert mask("short") == "••••"
    shown = masked_entry(encrypt_entry({"name": "a", "url": "http://h/mcp",
                                        "headers": {"Authorization": "Bearer " + SECRET}}))
    assert shown["headers"]["Authorization"] == "••••abcd"


def test_credentials_in_a_url_are_encrypted_and_the_rest_stays_readable(
        kortix_home: Path) -> None:
    entry = {"name": "q", "type": "http",
             "url": f"https://user:{SECRET}@mcp.example/v1?api_key={SECRET}&region=eu&x=1"}
    sealed = encrypt_entry(entry)
    assert SECRET not in json.dumps(sealed)
    assert sealed["url"].startswith("https://user:") and "region=eu" in sealed["url"]
    assert encrypt_entry(sealed) == sealed  # idempotent
    assert decrypt_entry(sealed)["url"] == (
        f"https://user:{SECRET}@mcp.example/v1?api_key={SECRET}&region=eu&x=1")
    shown = json.dumps(masked_entry(sealed))
    assert SECRET not in shown and SECRET[-4:] in shown
    plain = {"name": "p", "url": "http://127.0.0.1:9/mcp?region=eu"}
    assert encrypt_entry(plain) == plain  # nothing secret: untouched
