"""Errors of the owner look-up (see `workers.identity`): bad input derives from ValidationError (exit 2,
HTTP 400), runtime failures from IdentityUnavailable (exit 1, HTTP 503)."""
from __future__ import annotations

from typing import Any

from htdask.domain.validation import ValidationError


class IdentityError(Exception):
    """Any failure to turn an owner e-mail into a Unix user."""


class IdentityUnavailable(IdentityError):
    """A runtime failure (service down, token refused, bad site configuration): exit 1, not the user's fault."""


class _BadOwner(IdentityError, ValidationError):
    """The owner given from outside cannot be used (exit 2). str() is the one-line message."""

    def __init__(self, value: Any, message: str):
        self.field = "owner e-mail"
        self.value = value
        self.reason = message
        Exception.__init__(self, message)


class UnknownEmail(_BadOwner):
    def __init__(self, email: str, where: str):
        super().__init__(email, f"no {where} has e-mail {email!r}")


class AmbiguousEmail(_BadOwner):
    def __init__(self, email: str, users: list[str]):
        super().__init__(email, f"{len(users)} CI Connect users have e-mail {email!r} ({', '.join(users)}); "
                                "give the Unix user instead")


class IdentityNotConfigured(_BadOwner):
    def __init__(self, email: str):
        super().__init__(email, f"cannot resolve e-mail {email!r}: this site maps no e-mail addresses "
                                "(neither USER_MAP_FILE nor CICONNECT_URL is set); give the Unix user instead")


class IdentityConfigError(IdentityUnavailable):
    """USER_MAP_FILE / CICONNECT_* settings are wrong."""


class CIConnectUnreachable(IdentityUnavailable):
    pass


class CIConnectTokenRefused(IdentityUnavailable):
    pass


class CIConnectBadAnswer(IdentityUnavailable):
    pass
