"""MCP credentials at rest: Fernet-encrypted in agent records, masked on display.

An MCP server's ``env`` values and HTTP ``headers`` values are where its
credentials live (API keys, bearer tokens) — and sometimes its URL, as a
query parameter (``?api_key=…``) or a password (``https://user:pw@host``) —
so every one of them is encrypted
before an entry goes into an agent record, and decrypted only in memory right
before the server is started. Encrypted values are strings ``enc:v1:<token>``,
so a record stays JSON and a half-migrated record (some values in clear) still
works.

The key is kept outside the store: ``$KORTIX_LAB_SECRET_KEY`` (a Fernet key, or
any passphrase, which is stretched to one), else ``<home>/secret.key``, created
on first use with mode 0600. Losing the key makes the stored credentials
unreadable, by design; the error says which key was used.

Nothing in this module logs or prints a value; ``mask`` shows at most the last
four characters of a long secret.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit, urlunsplit

from ..agentpress.errors import ConfigError
from ._paths import secret_key_path

if TYPE_CHECKING:
    from cryptography.fernet import Fernet

PREFIX = "enc:v1:"
ENV_KEY = "KORTIX_LAB_SECRET_KEY"
_SECRET_MAPS = ("env", "headers")
_DOTS = "••••"


class SecretError(ConfigError):
    """A stored credential cannot be decrypted (the key changed or the value is damaged)."""


def is_encrypted(value: object) -> bool:
    return isinstance(value, str) and value.startswith(PREFIX)


def mask(value: str) -> str:
    """``"sk-live-1234abcd"`` → ``"••••abcd"``; short values show nothing."""
    return _DOTS + value[-4:] if len(value) >= 12 else _DOTS


class SecretBox:
    """Encrypts and decrypts credential strings with one Fernet key."""

    def __init__(self, key: bytes | str) -> None:
        from cryptography.fernet import Fernet

        self._fernet: Fernet = Fernet(_fernet_key(key))
        self.source = "a key given in code"

    @classmethod
    def default(cls) -> SecretBox:
        """The box for ``$KORTIX_LAB_SECRET_KEY``, else the key file (made if missing)."""
        env = os.environ.get(ENV_KEY)
        path = secret_key_path()
        cache_key = ("env", env) if env else ("file", str(path))
        box = _boxes.get(cache_key)
        if box is None:
            if env:
                box = cls(env)
                box.source = f"${ENV_KEY}"
            else:
                box = cls(_read_or_create_key(path))
                box.source = str(path)
            _boxes[cache_key] = box
        return box

    def encrypt(self, value: str) -> str:
        if is_encrypted(value):
            return value
        return PREFIX + self._fernet.encrypt(value.encode("utf-8")).decode("ascii")

    def decrypt(self, value: str) -> str:
        if not is_encrypted(value):
            return value
        from cryptography.fernet import InvalidToken

        try:
            return self._fernet.decrypt(value[len(PREFIX):].encode("ascii")).decode("utf-8")
        except (InvalidToken, ValueError):
            raise SecretError(f"a stored MCP credential cannot be decrypted with the key from "
                              f"{self.source}: was the key changed or lost? Set the original "
                              f"key, or add the server again") from None


_boxes: dict[tuple[str, str], SecretBox] = {}


def encrypt_entry(entry: Mapping[str, Any], box: SecretBox | None = None) -> dict[str, Any]:
    """A copy of a server entry (any accepted shape) with every env and header value
    encrypted; values already encrypted are kept as they are."""
    the_box = box or SecretBox.default()
    return _map_secrets(entry, the_box.encrypt)


def decrypt_entry(entry: Mapping[str, Any], box: SecretBox | None = None) -> dict[str, Any]:
    """A copy with every encrypted value decrypted; keep it in memory only."""
    if not _has_encrypted(entry):
        return copy.deepcopy(dict(entry))
    the_box = box or SecretBox.default()
    return _map_secrets(entry, the_box.decrypt)


def masked_entry(entry: Mapping[str, Any], box: SecretBox | None = None) -> dict[str, Any]:
    """A copy fit for display: every env and header value masked (``••••abcd``)."""
    def show(value: str) -> str:
        if not is_encrypted(value):
            return mask(value)
        try:
            return mask((box or SecretBox.default()).decrypt(value))
        except SecretError:
            return _DOTS + " (cannot be decrypted with this key)"

    return _map_secrets(entry, show)


def _map_secrets(entry: Mapping[str, Any], fn: Callable[[str], str]) -> dict[str, Any]:
    out = copy.deepcopy(dict(entry))
    _apply(out, fn)
    return out


def _apply(node: dict[str, Any], fn: Callable[[str], str]) -> None:
    for group in ("mcpServers", "servers"):
        servers = node.get(group)
        if isinstance(servers, dict):
            for server in servers.values():
                if isinstance(server, dict):
                    _apply(server, fn)
    nested = node.get("config")
    if isinstance(nested, dict):
        _apply(nested, fn)
    url = node.get("url")
    if isinstance(url, str):
        node["url"] = _map_url(url, fn)
    for key in _SECRET_MAPS:
        values = node.get(key)
        if isinstance(values, dict):
            for name, value in values.items():
                if isinstance(value, str | int | float) and not isinstance(value, bool):
                    values[name] = fn(str(value))


# Query parameters that carry credentials (``?api_key=``, ``&token=``, ``sig=`` …).
_SECRET_PARAM = re.compile(r"(key|token|secret|passw|auth|sig|credential|session)",
                           re.IGNORECASE)


def _map_url(url: str, fn: Callable[[str], str]) -> str:
    """``url`` with ``fn`` applied to its password and to every credential-like query
    value; the rest (host, path, other parameters) stays readable."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if parts.password is not None:
        userinfo, host = netloc.rsplit("@", 1)
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}:{quote(fn(unquote(parts.password)), safe='')}@{host}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(_SECRET_PARAM.search(name) and value for name, value in pairs):
            query = urlencode([(name, fn(value) if _SECRET_PARAM.search(name) and value
                                else value) for name, value in pairs])
    if netloc == parts.netloc and query == parts.query:
        return url
    return urlunsplit(parts._replace(netloc=netloc, query=query))


def _has_encrypted(node: Any) -> bool:
    if isinstance(node, str):
        return is_encrypted(node) or (PREFIX in unquote(node) and "://" in node)
    if isinstance(node, Mapping):
        return any(_has_encrypted(v) for v in node.values())
    if isinstance(node, list):
        return any(_has_encrypted(v) for v in node)
    return False


def _fernet_key(key: bytes | str) -> bytes:
    raw = key.encode() if isinstance(key, str) else key
    raw = raw.strip()
    try:
        if len(base64.urlsafe_b64decode(raw)) == 32:
            return raw
    except ValueError:
        pass
    # A passphrase: stretch it to a key. (A Fernet key from Fernet.generate_key() is better.)
    stretched = hashlib.pbkdf2_hmac("sha256", raw, b"kortix-lab/mcp-secrets", 200_000)
    return base64.urlsafe_b64encode(stretched)


def _read_or_create_key(path: Path) -> bytes:
    """The key file's key; the first caller creates it (0600). The key is written to a
    private temporary file and linked into place, so two processes starting at once
    agree on one key and neither ever reads a half-written file."""
    try:
        return path.read_bytes().strip()
    except FileNotFoundError:
        pass
    from cryptography.fernet import Fernet

    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(Fernet.generate_key() + b"\n")
    try:
        os.link(tmp, path)
    except FileExistsError:
        pass
    finally:
        tmp.unlink()
    return path.read_bytes().strip()
