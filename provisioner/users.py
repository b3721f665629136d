"""Dashboard users and their API tokens: the logic the web app and the CLI share.

Passwords are stored as werkzeug hashes (scrypt).  API tokens are random
(``lxcp_`` + 43 URL-safe characters); only their SHA-256 and a short prefix
(to tell them apart in listings) are stored, so a token is shown exactly
once, when it is created.  Nothing here commits: the caller owns the
transaction.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session
from werkzeug.security import check_password_hash, generate_password_hash

from provisioner.errors import PermanentError
from provisioner.models import ApiToken, User, utcnow

TOKEN_SCHEME = "lxcp_"
PREFIX_LENGTH = 12  # "lxcp_" + 7 characters: enough to tell tokens apart
MIN_PASSWORD_LENGTH = 10
MAX_PASSWORD_LENGTH = 1024  # hashing a megabyte of "password" is a denial of service
# last_used_at is a hint for humans: one write a minute per token is plenty,
# and on SQLite every write takes the database's write lock.
LAST_USED_RESOLUTION = timedelta(seconds=60)
_USERNAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}")
_TOKEN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}")
# Checked when the user does not exist, so both paths cost one hash.
_DUMMY_HASH = generate_password_hash("not a real password, only burns the same time")


class UserError(PermanentError):
    """A user or token operation was refused; ``field`` names the culprit
    and ``kind`` says why: ``invalid`` input, a ``missing`` user or token,
    or one that ``exists`` already."""

    def __init__(self, field: str, message: str, kind: str = "invalid") -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.kind = kind


def _check_username(username: str) -> None:
    if not isinstance(username, str) or not _USERNAME.fullmatch(username):
        raise UserError(
            "username",
            "1-64 characters: letters, digits and '_.@-', starting with a letter or digit",
        )


def check_password_policy(password: str) -> None:
    """Refuse passwords that are too short or absurdly long.

    Raises:
        UserError: naming the field ``password``.
    """
    if not isinstance(password, str) or len(password) < MIN_PASSWORD_LENGTH:
        raise UserError("password", f"must be at least {MIN_PASSWORD_LENGTH} characters long")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise UserError("password", f"may be at most {MAX_PASSWORD_LENGTH} characters long")


def hash_password(password: str) -> str:
    """The werkzeug hash (scrypt) of ``password``."""
    return generate_password_hash(password, method="scrypt")


def get_user(session: Session, username: str) -> User | None:
    return session.scalars(select(User).where(User.username == username)).one_or_none()


def require_user(session: Session, username: str) -> User:
    """The user named ``username``.

    Raises:
        UserError: no such user.
    """
    user = get_user(session, username)
    if user is None:
        raise UserError("username", f"no user named {username!r}", "missing")
    return user


def create_user(session: Session, username: str, password: str, *, is_admin: bool = False) -> User:
    """Add a user (flushed, not committed).

    Raises:
        UserError: a malformed or taken username, or a password the policy refuses.
    """
    _check_username(username)
    check_password_policy(password)
    if get_user(session, username) is not None:
        raise UserError("username", f"a user named {username!r} already exists", "exists")
    user = User(username=username, password_hash=hash_password(password), is_admin=is_admin)
    session.add(user)
    session.flush()
    return user


def set_password(session: Session, username: str, password: str) -> User:
    """Change a user's password (which also ends their dashboard sessions).

    Raises:
        UserError: unknown user or a password the policy refuses.
    """
    check_password_policy(password)
    user = require_user(session, username)
    user.password_hash = hash_password(password)
    session.flush()
    return user


def verify_password(session: Session, username: str, password: str) -> User | None:
    """The user if ``password`` is theirs, else None (unknown users included).

    Takes as long for an unknown user as for a wrong password, so timing does
    not tell which usernames exist.
    """
    user = get_user(session, username) if isinstance(username, str) else None
    return user if check_password(user, password) else None


def check_password(user: User | None, password: str) -> bool:
    """Whether ``password`` is ``user``'s; False for no user, at the same cost.

    Needs no database: the web app ends its transaction before hashing, so a
    slow hash never holds SQLite's write lock.
    """
    if not isinstance(password, str) or len(password) > MAX_PASSWORD_LENGTH:
        return False
    if user is None:
        check_password_hash(_DUMMY_HASH, password)
        return False
    return check_password_hash(user.password_hash, password)


def password_stamp(user: User) -> str:
    """A short digest of the user's password hash: a session records it, so a
    password change ends every session made with the old one."""
    return hashlib.sha256(user.password_hash.encode()).hexdigest()[:16]


def hash_token(token: str) -> str:
    """SHA-256 of a token: tokens are long random strings, so a fast hash is
    enough and lets a token be looked up by its hash."""
    return hashlib.sha256(token.encode()).hexdigest()


def create_api_token(session: Session, username: str, name: str) -> tuple[ApiToken, str]:
    """Make an API token for a user (flushed, not committed).

    Returns:
        The stored row and the token itself, which is never stored and
        cannot be shown again.

    Raises:
        UserError: unknown user, a malformed name, or a name the user already uses.
    """
    if not isinstance(name, str) or not _TOKEN_NAME.fullmatch(name):
        raise UserError("name", "1-64 characters: letters, digits and '_.@-'")
    user = require_user(session, username)
    if any(t.name == name for t in user.api_tokens):
        raise UserError("name", f"user {username!r} already has a token named {name!r}", "exists")
    token = TOKEN_SCHEME + secrets.token_urlsafe(32)
    row = ApiToken(user=user, name=name, token_hash=hash_token(token), prefix=token[:PREFIX_LENGTH])
    session.add(row)
    session.flush()
    return row, token


def revoke_token(session: Session, username: str, name: str) -> ApiToken:
    """Revoke a user's token by name; the row stays for the record.

    Raises:
        UserError: unknown user or token.
    """
    user = require_user(session, username)
    for token in user.api_tokens:
        if token.name == name:
            token.revoked = True
            session.flush()
            return token
    raise UserError("name", f"user {username!r} has no token named {name!r}", "missing")


def list_tokens(session: Session, username: str) -> list[ApiToken]:
    """A user's tokens (revoked ones included), oldest first.

    Raises:
        UserError: unknown user.
    """
    user = require_user(session, username)
    return sorted(user.api_tokens, key=lambda t: (t.created_at, t.id))


def verify_api_token(session: Session, token: str) -> User | None:
    """The owner of a valid, unrevoked token, else None.  Updates the
    token's ``last_used_at`` (at most once a minute; flushed, not committed)."""
    if not isinstance(token, str) or not token.startswith(TOKEN_SCHEME) or len(token) > 256:
        return None
    digest = hash_token(token)
    row = session.scalars(select(ApiToken).where(ApiToken.token_hash == digest)).one_or_none()
    # The lookup is by hash; comparing again in constant time costs nothing.
    if row is None or row.revoked or not hmac.compare_digest(row.token_hash, digest):
        return None
    now = utcnow()
    if row.last_used_at is None or now - row.last_used_at >= LAST_USED_RESOLUTION:
        row.last_used_at = now
        session.flush()
    return row.user
