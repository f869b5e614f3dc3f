"""Optional RBAC of the embedded Service-Center, after Service-Center's own.

Owns the accounts and roles file (JSON, or TOML by its ``.toml`` suffix), password hashes
(``scrypt$N$r$p$salt$hash`` or ``pbkdf2-sha256$iterations$salt$hash``, salt and hash in
base64, from the standard library's :mod:`hashlib`), the tokens ``POST /v4/token`` hands
out (HS256 JSON Web Tokens naming the account, signed with a key made at start, so they
end with the process or after ``token_ttl``) and the permission check: a role holds
permissions, each a set of resource types (``service``, ``service/schema``,
``governance``, ``account``, ``role``, ``ops`` or ``*``) and verbs (``get``, ``create``,
``update``, ``delete`` or ``*``). The built-in roles are Service-Center's ``admin``
(everything) and ``developer`` (services, schemas and governance, every verb; ``ops``
read-only). Failures raise :class:`RegistryError` with cari's RBAC codes (401201 and
following for who you are, 403205 for what you may do).

Which route is which resource and verb is the HTTP app's business; this module knows no
routes and must not import ``app`` or ``core``. ``python -m pysyncer.servicecenter.rbac``
reads a password on stdin and prints its hash for the file.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import sys
import time
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from pysyncer.errors import ConfigError
from pysyncer.servicecenter.errors import (
    ERR_NO_AUTH_HEADER,
    ERR_NO_PERMISSION,
    ERR_TOKEN_EXPIRED,
    ERR_TOKEN_OWNER_DELETED,
    ERR_UNAUTHORIZED,
    ERR_USER_OR_PASSWORD_WRONG,
    RegistryError,
)

__all__ = [
    "BUILTIN_ROLES",
    "RESOURCES",
    "VERBS",
    "VERIFIED_TOKENS",
    "Account",
    "Permission",
    "Rbac",
    "Role",
    "hash_password",
    "load_rbac",
    "verify_password",
]

RESOURCES: Final = frozenset({"service", "service/schema", "governance", "account", "role", "ops"})
VERBS: Final = frozenset({"get", "create", "update", "delete"})
ANY: Final = "*"

_SCRYPT: Final = "scrypt"
_PBKDF2: Final = "pbkdf2-sha256"
_SCRYPT_N, _SCRYPT_R, _SCRYPT_P = 2**14, 8, 1
_HASH_BYTES: Final = 32
_SCRYPT_MAXMEM: Final = 2**27
_JWT_HEADER: Final = {"alg": "HS256", "typ": "JWT"}
VERIFIED_TOKENS: Final = 1024  # tokens an Rbac remembers as verified (oldest out)


@dataclass(frozen=True, slots=True)
class Permission:
    """Verbs allowed on resource types (``*`` in either means all)."""

    resources: frozenset[str]
    verbs: frozenset[str]

    def allows(self, resource: str, verb: str) -> bool:
        return (ANY in self.resources or resource in self.resources) and (
            ANY in self.verbs or verb in self.verbs
        )


@dataclass(frozen=True, slots=True)
class Role:
    name: str
    perms: tuple[Permission, ...]

    def allows(self, resource: str, verb: str) -> bool:
        return any(p.allows(resource, verb) for p in self.perms)


@dataclass(frozen=True, slots=True)
class Account:
    name: str
    password_hash: str
    roles: tuple[str, ...]


BUILTIN_ROLES: Final = {
    "admin": Role("admin", (Permission(frozenset({ANY}), frozenset({ANY})),)),
    "developer": Role(
        "developer",
        (
            Permission(frozenset({"service", "service/schema", "governance"}), frozenset({ANY})),
            Permission(frozenset({"ops"}), frozenset({"get"})),
        ),
    ),
}


# ---------------------------------------------------------------------- passwords


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    """A scrypt hash of ``password`` for the accounts file."""
    salt = salt if salt is not None else secrets.token_bytes(16)
    digest = hashlib.scrypt(
        password.encode(), salt=salt, n=_SCRYPT_N, r=_SCRYPT_R, p=_SCRYPT_P, dklen=_HASH_BYTES
    )
    return f"{_SCRYPT}${_SCRYPT_N}${_SCRYPT_R}${_SCRYPT_P}${_b64(salt)}${_b64(digest)}"


def _check_hash_format(text: str) -> None:
    """Raise ValueError unless ``text`` is a hash :func:`verify_password` understands."""
    parts = text.split("$")
    numbers, encoded = (parts[1:4], parts[4:]) if parts[0] == _SCRYPT else (parts[1:2], parts[2:])
    if parts[0] not in (_SCRYPT, _PBKDF2) or len(parts) != (6 if parts[0] == _SCRYPT else 4):
        raise ValueError(f"a password hash must be {_SCRYPT}$N$r$p$salt$hash or {_PBKDF2}$...")
    if not all(n.isdigit() and int(n) > 0 for n in numbers):
        raise ValueError("the hash parameters must be positive integers")
    if parts[0] == _SCRYPT:
        n, r, p = (int(x) for x in numbers)
        if n < 2 or n & (n - 1) or 128 * n * r * p > _SCRYPT_MAXMEM // 2:
            raise ValueError("scrypt N must be a power of 2 and N*r*p within 64 MiB of memory")
    for item in encoded:
        base64.b64decode(item, validate=True)


def verify_password(password: str, stored: str) -> bool:
    """Whether ``password`` matches ``stored`` (constant-time comparison)."""
    parts = stored.split("$")
    password_bytes = password.encode()
    if parts[0] == _SCRYPT:
        n, r, p = (int(x) for x in parts[1:4])
        salt, expected = base64.b64decode(parts[4]), base64.b64decode(parts[5])
        got = hashlib.scrypt(
            password_bytes, salt=salt, n=n, r=r, p=p, dklen=len(expected), maxmem=_SCRYPT_MAXMEM
        )
    else:
        iterations = int(parts[1])
        salt, expected = base64.b64decode(parts[2]), base64.b64decode(parts[3])
        got = hashlib.pbkdf2_hmac("sha256", password_bytes, salt, iterations, len(expected))
    return hmac.compare_digest(got, expected)


# ---------------------------------------------------------------------- the file


def _strings(value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ValueError(f"{where} must be a list of non-empty strings")
    return tuple(value)


def _permission(value: Any, where: str) -> Permission:
    if not isinstance(value, Mapping):
        raise ValueError(f"{where} must be a table/object")
    resources = value.get("resources")
    if not isinstance(resources, list) or not resources:
        raise ValueError(f"{where}.resources must be a non-empty list of {{type}} objects")
    types: set[str] = set()
    for item in resources:
        kind = item.get("type") if isinstance(item, Mapping) else None
        if kind != ANY and kind not in RESOURCES:
            raise ValueError(f"{where}.resources: type must be one of {sorted(RESOURCES)} or *")
        if item.get("labels"):
            raise ValueError(f"{where}.resources: labels are not supported")
        types.add(kind)
    verbs = set(_strings(value.get("verbs"), f"{where}.verbs"))
    if not verbs <= VERBS | {ANY}:
        raise ValueError(f"{where}.verbs must be among {sorted(VERBS)} or *")
    return Permission(frozenset(types), frozenset(verbs))


def _parse(data: Mapping[str, Any]) -> tuple[dict[str, Account], dict[str, Role]]:
    roles = dict(BUILTIN_ROLES)
    raw_roles = data.get("roles", [])
    if not isinstance(raw_roles, list):
        raise ValueError("'roles' must be a list")
    for n, item in enumerate(raw_roles):
        where = f"roles[{n}]"
        name = item.get("name") if isinstance(item, Mapping) else None
        if not isinstance(name, str) or not name:
            raise ValueError(f"{where}.name must be a non-empty string")
        if name in roles:
            raise ValueError(f"{where}: role {name!r} is defined twice (or is built in)")
        perms = item.get("perms")
        if not isinstance(perms, list) or not perms:
            raise ValueError(f"{where}.perms must be a non-empty list")
        roles[name] = Role(
            name, tuple(_permission(p, f"{where}.perms[{i}]") for i, p in enumerate(perms))
        )
    accounts: dict[str, Account] = {}
    raw_accounts = data.get("accounts")
    if not isinstance(raw_accounts, list) or not raw_accounts:
        raise ValueError("'accounts' must be a non-empty list")
    for n, item in enumerate(raw_accounts):
        where = f"accounts[{n}]"
        if not isinstance(item, Mapping):
            raise ValueError(f"{where} must be a table/object")
        name, hashed = item.get("name"), item.get("password_hash")
        if not isinstance(name, str) or not name:
            raise ValueError(f"{where}.name must be a non-empty string")
        if name in accounts:
            raise ValueError(f"{where}: account {name!r} is defined twice")
        if not isinstance(hashed, str):
            raise ValueError(f"{where}.password_hash must be a string (never a plain password)")
        _check_hash_format(hashed)
        account_roles = _strings(item.get("roles"), f"{where}.roles")
        unknown = [r for r in account_roles if r not in roles]
        if unknown:
            raise ValueError(f"{where}: unknown role(s) {', '.join(unknown)}")
        accounts[name] = Account(name, hashed, account_roles)
    return accounts, roles


def load_rbac(path: Path, *, token_ttl: float = 1800.0) -> Rbac:
    """The :class:`Rbac` of an accounts and roles file; :class:`ConfigError` naming it."""
    try:
        raw = path.read_bytes()
        data = tomllib.loads(raw.decode()) if path.suffix == ".toml" else json.loads(raw)
        if not isinstance(data, dict):
            raise ValueError("the file must hold a table/object")
        accounts, roles = _parse(data)
    except (OSError, UnicodeDecodeError, ValueError) as exc:  # JSON/TOML errors included
        raise ConfigError(f"registry RBAC file {path}: {exc}") from None
    return Rbac(accounts, roles, token_ttl=token_ttl)


# ---------------------------------------------------------------------- tokens


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Rbac:
    """Accounts, roles, login and the per-request check of one registry."""

    def __init__(
        self,
        accounts: Mapping[str, Account],
        roles: Mapping[str, Role] | None = None,
        *,
        token_ttl: float = 1800.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.accounts = dict(accounts)
        self.roles = dict(BUILTIN_ROLES if roles is None else roles)
        self.token_ttl = token_ttl
        self._clock = clock
        self._key = secrets.token_bytes(32)
        # Tokens whose signature was checked, with their (subject, expiry): a token is
        # verified once (HMAC, decoding), then found here; its expiry and account are
        # checked on every request all the same. Only signed tokens enter, and only
        # logins make those, so it churns no faster than logins.
        self._verified: dict[str, tuple[str, int]] = {}
        # A hash to spend the same time on when the account does not exist.
        self._decoy = hash_password(secrets.token_hex(8))

    def login(self, name: Any, password: Any) -> str:
        """A token for the account, or 401202 (CPU-heavy: run it off the event loop)."""
        if not isinstance(name, str) or not isinstance(password, str):
            raise RegistryError(ERR_USER_OR_PASSWORD_WRONG, "'name' and 'password' are required")
        account = self.accounts.get(name)
        matches = verify_password(password, account.password_hash if account else self._decoy)
        if account is None or not matches:
            raise RegistryError(ERR_USER_OR_PASSWORD_WRONG, "")
        now = int(self._clock())
        claims = {"sub": name, "iat": now, "exp": now + int(self.token_ttl)}
        signing = ".".join(
            _b64url(json.dumps(part, separators=(",", ":")).encode())
            for part in (_JWT_HEADER, claims)
        )
        return f"{signing}.{_b64url(self._sign(signing))}"

    def _sign(self, signing: str) -> bytes:
        return hmac.new(self._key, signing.encode("ascii"), hashlib.sha256).digest()

    def account_of(self, authorization: str) -> Account:
        """The account an ``Authorization: Bearer <token>`` header proves, or a 401 error."""
        if not authorization:
            raise RegistryError(ERR_NO_AUTH_HEADER, "should provide Authorization header")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise RegistryError(ERR_UNAUTHORIZED, "invalid auth header")
        token = token.strip()
        claims = self._verified.get(token)
        if claims is None:
            claims = self._verify(token)
            if len(self._verified) >= VERIFIED_TOKENS:
                del self._verified[next(iter(self._verified))]  # the oldest
            self._verified[token] = claims
        subject, expiry = claims
        if expiry <= self._clock():
            raise RegistryError(ERR_TOKEN_EXPIRED, "log in again with POST /v4/token")
        account = self.accounts.get(subject)
        if account is None:
            raise RegistryError(ERR_TOKEN_OWNER_DELETED, "")
        return account

    def _verify(self, token: str) -> tuple[str, int]:
        """The (subject, expiry) a token this registry signed names, or 401201."""
        signing, _, signature = token.rpartition(".")
        try:
            good = signing.isascii() and hmac.compare_digest(
                _unb64url(signature), self._sign(signing)
            )
            claims = json.loads(_unb64url(signing.split(".")[1])) if good else None
        except (ValueError, IndexError):
            claims = None
        if not isinstance(claims, dict) or not isinstance(claims.get("exp"), int):
            raise RegistryError(ERR_UNAUTHORIZED, "the token is not one this registry issued")
        return str(claims.get("sub")), claims["exp"]

    def authorize(self, authorization: str, resource: str, verb: str) -> Account:
        """The account, when one of its roles allows ``verb`` on ``resource``; else 401/403."""
        account = self.account_of(authorization)
        if not self._allows(account.roles, resource, verb):
            raise RegistryError(
                ERR_NO_PERMISSION, f"account {account.name!r} may not {verb} {resource}"
            )
        return account

    def _allows(self, role_names: Iterable[str], resource: str, verb: str) -> bool:
        return any(
            role.allows(resource, verb)
            for role in (self.roles.get(name) for name in role_names)
            if role is not None
        )


def main() -> int:
    """Read a password on stdin, print its hash (for ``password_hash`` in the file)."""
    password = sys.stdin.readline().rstrip("\n")
    if not password:
        print("give the password on stdin", file=sys.stderr)
        return 2
    print(hash_password(password))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
