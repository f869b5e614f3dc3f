"""Service-Center error codes and the error the embedded registry raises.

Owns the numeric ``errorCode`` values, their messages (as Service-Center registers them)
and the HTTP status each maps to. Nothing here knows about HTTP handlers or storage.
"""

from __future__ import annotations

from typing import Final

from pysyncer.errors import PysyncerError

__all__ = [
    "ERR_DEPLOYED_INSTANCE",
    "ERR_INSTANCE_NOT_EXISTS",
    "ERR_INTERNAL",
    "ERR_INVALID_PARAMS",
    "ERR_NOT_ENOUGH_QUOTA",
    "ERR_NO_AUTH_HEADER",
    "ERR_NO_PERMISSION",
    "ERR_SCHEMA_NOT_EXISTS",
    "ERR_SERVICE_ALREADY_EXISTS",
    "ERR_SERVICE_NOT_EXISTS",
    "ERR_TOKEN_EXPIRED",
    "ERR_TOKEN_OWNER_DELETED",
    "ERR_UNAUTHORIZED",
    "ERR_UNAVAILABLE_BACKEND",
    "ERR_USER_OR_PASSWORD_WRONG",
    "MESSAGES",
    "RegistryError",
    "invalid",
    "no_quota",
]

ERR_INVALID_PARAMS: Final = 400001
ERR_SERVICE_ALREADY_EXISTS: Final = 400010
ERR_SERVICE_NOT_EXISTS: Final = 400012
ERR_DEPLOYED_INSTANCE: Final = 400013
ERR_SCHEMA_NOT_EXISTS: Final = 400016
ERR_INSTANCE_NOT_EXISTS: Final = 400017
ERR_NOT_ENOUGH_QUOTA: Final = 400100
# RBAC (cari rbac): 401 for who you are, 403 for what you may do.
ERR_UNAUTHORIZED: Final = 401201
ERR_USER_OR_PASSWORD_WRONG: Final = 401202
ERR_NO_AUTH_HEADER: Final = 401204
ERR_TOKEN_EXPIRED: Final = 401205
ERR_TOKEN_OWNER_DELETED: Final = 401206
ERR_NO_PERMISSION: Final = 403205
ERR_INTERNAL: Final = 500003
ERR_UNAVAILABLE_BACKEND: Final = 500011

# Service-Center's messages for these codes (cari discovery and rbac errorsMap).
MESSAGES: Final[dict[int, str]] = {
    ERR_INVALID_PARAMS: "Invalid parameter(s)",
    ERR_SERVICE_ALREADY_EXISTS: "Micro-service already exists",
    ERR_SERVICE_NOT_EXISTS: "Micro-service does not exist",
    ERR_DEPLOYED_INSTANCE: "Micro-service has deployed instance(s)",
    ERR_SCHEMA_NOT_EXISTS: "Schema does not exist",
    ERR_INSTANCE_NOT_EXISTS: "Instance does not exist",
    ERR_NOT_ENOUGH_QUOTA: "Not enough quota",
    ERR_UNAUTHORIZED: "Request unauthorized",
    ERR_USER_OR_PASSWORD_WRONG: "User name or password is wrong",
    ERR_NO_AUTH_HEADER: "No authorization header",
    ERR_TOKEN_EXPIRED: "Token is expired",
    ERR_TOKEN_OWNER_DELETED: "The account that owns the token is deleted",
    ERR_NO_PERMISSION: "No permission(s)",
    ERR_INTERNAL: "Internal server error",
    ERR_UNAVAILABLE_BACKEND: "Registry service is unavailable",
}


class RegistryError(PysyncerError):
    """A request the registry refuses, with Service-Center's ``errorCode`` and a detail."""

    def __init__(self, code: int, detail: str = "") -> None:
        self.code = code
        self.message = MESSAGES.get(code, "Unknown error")
        self.detail = detail
        super().__init__(f"{code} {self.message}: {detail}" if detail else f"{code} {self.message}")

    @property
    def http_status(self) -> int:
        """Service-Center's mapping: 5xxxxx -> 500, 401xxx -> 401, 403xxx -> 403, else 400."""
        if self.code >= 500000:
            return 500
        if 401000 <= self.code < 402000:
            return 401
        if 403000 <= self.code < 404000:
            return 403
        return 400

    def to_json(self) -> dict[str, str]:
        """The spec's ``Error`` body: ``{"errorCode", "errorMessage", "detail"}``."""
        return {"errorCode": str(self.code), "errorMessage": self.message, "detail": self.detail}


def invalid(detail: str) -> RegistryError:
    return RegistryError(ERR_INVALID_PARAMS, detail)


def no_quota(detail: str) -> RegistryError:
    return RegistryError(ERR_NOT_ENOUGH_QUOTA, detail)
