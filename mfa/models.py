"""The database tables.

Times are Unix seconds (integers). Ids are UUIDs made here, before the insert, so that a secret
can be sealed to its row (``mfa.secretbox``) in the same statement that stores it.
Secrets live only in ``LargeBinary`` columns holding sealed values; tokens only as hashes.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, fields
from typing import Protocol

from sqlalchemy import (
    BigInteger,
    Column,
    Index,
    LargeBinary,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy import inspect as sa_inspect
from sqlmodel import Field, SQLModel


def new_id() -> str:
    """A UUIDv7 (RFC 9562 section 5.7): the time in milliseconds, then 74 random bits.

    Rows made one after another get ids that sort together, so an index on them grows at its
    end, a page that the inserts beside it touch too, instead of at a random page each. A
    verify adds a refresh token with a new id and a new family id: with random ids those were
    two of its ~9 index pages scattered over the file, each written to the log at its commit
    and again to the file at the next checkpoint.

    An id tells when its row was made, as the row's own times do. No id is a secret: every
    request that names one is checked against who may see it."""
    ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = (
        (ms & _MS_MASK) << 80
        | 0x7 << 76  # version
        | (rand >> 62 & 0xFFF) << 64  # rand_a
        | 0b10 << 62  # variant
        | rand & _RAND_B_MASK  # rand_b
    )
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


_MS_MASK = (1 << 48) - 1
_RAND_B_MASK = (1 << 62) - 1


def table_of(model: type[SQLModel]) -> Table:
    """The Core table behind a model, for statements that need no ORM."""
    table = sa_inspect(model).local_table
    assert isinstance(table, Table)
    return table


class User(SQLModel, table=True):
    __tablename__ = "users"

    id: str = Field(default_factory=new_id, primary_key=True, max_length=36)
    username: str = Field(max_length=64)
    # Lower-cased username: uniqueness and lookups ignore case.
    username_key: str = Field(max_length=64, unique=True)
    password_hash: str = Field(max_length=256)
    is_admin: bool = False
    created_at: int = Field(sa_type=BigInteger)


class Factor(SQLModel, table=True):
    """An enrolled second factor. Type-specific state lives in the columns its type uses."""

    __tablename__ = "factors"
    __table_args__ = (Index("ix_factors_user", "user_id", "status"),)

    id: str = Field(default_factory=new_id, primary_key=True, max_length=36)
    user_id: str = Field(foreign_key="users.id", ondelete="CASCADE", max_length=36)
    type: str = Field(max_length=16)
    label: str = Field(max_length=64)
    status: str = Field(max_length=16)  # pending | active | disabled
    created_at: int = Field(sa_type=BigInteger)
    confirmed_at: int | None = Field(default=None, sa_type=BigInteger)
    last_used_at: int | None = Field(default=None, sa_type=BigInteger)
    # OTP kinds (totp, hotp, ocra): the sealed key and its parameters.
    secret: bytes | None = Field(default=None, sa_type=LargeBinary)
    algorithm: str | None = Field(default=None, max_length=8)
    digits: int | None = None
    period: int | None = None
    # The next acceptable counter: an HOTP/OCRA counter, or a TOTP/OCRA time step. A code is
    # accepted by ``UPDATE ... SET counter = c + 1 WHERE counter <= c`` and so never twice.
    counter: int = Field(default=0, sa_type=BigInteger)
    suite: str | None = Field(default=None, max_length=128)
    pin: bytes | None = Field(default=None, sa_type=LargeBinary)
    serial: str | None = Field(default=None, max_length=64)
    # The open enrollment challenge of a pending factor (an OCRA question, WebAuthn state).
    challenge: str | None = Field(default=None, sa_type=Text)


class Account(Protocol):
    """Whom an audit event names: a ``User``, or the two columns of one a hot path read."""

    @property
    def id(self) -> str: ...
    @property
    def username(self) -> str: ...


class FactorFields(Protocol):
    """What a factor's view reads: a ``Factor``, or a row of its table read without the ORM
    (the ``/api/me`` path, where loading ORM objects cost more than the query)."""

    @property
    def id(self) -> str: ...
    @property
    def type(self) -> str: ...
    @property
    def label(self) -> str: ...
    @property
    def status(self) -> str: ...
    @property
    def created_at(self) -> int: ...
    @property
    def confirmed_at(self) -> int | None: ...
    @property
    def last_used_at(self) -> int | None: ...
    @property
    def algorithm(self) -> str | None: ...
    @property
    def digits(self) -> int | None: ...
    @property
    def period(self) -> int | None: ...
    @property
    def suite(self) -> str | None: ...
    @property
    def serial(self) -> str | None: ...


class FactorView(FactorFields, Protocol):
    """A factor with what its view shows of other tables, read in the same row
    (``factors.VIEW_COLUMNS``): its security key's details for a ``webauthn`` factor, its
    count of unused codes for a ``recovery`` one; None where they do not apply."""

    @property
    def aaguid(self) -> str | None: ...
    @property
    def transports(self) -> str | None: ...
    @property
    def backup_eligible(self) -> bool | int | None: ...
    @property
    def backed_up(self) -> bool | int | None: ...
    @property
    def user_verified(self) -> bool | int | None: ...
    @property
    def remaining(self) -> int | None: ...


class FactorState(FactorFields, Protocol):
    """What checking an answer reads of a factor: a ``Factor``, or a ``FactorRow``."""

    @property
    def user_id(self) -> str: ...
    @property
    def secret(self) -> bytes | None: ...
    @property
    def counter(self) -> int: ...
    @property
    def pin(self) -> bytes | None: ...


@dataclass(frozen=True)
class FactorRow:
    """A factor's columns as a login's verify reads them, without the ORM (``mfa.direct``);
    ``challenge`` is left out (a login keeps its challenge on its ``LoginTransaction``)."""

    id: str
    user_id: str
    type: str
    label: str
    status: str
    created_at: int
    confirmed_at: int | None
    last_used_at: int | None
    secret: bytes | None
    algorithm: str | None
    digits: int | None
    period: int | None
    counter: int
    suite: str | None
    pin: bytes | None
    serial: str | None


# The columns of a ``FactorRow``, in its fields' order, for selects that build one from a row.
FACTOR_ROW_COLUMNS = [table_of(Factor).c[f.name] for f in fields(FactorRow)]


class RecoveryCode(SQLModel, table=True):
    """One code of a recovery set (a factor of type ``recovery``), stored only as a keyed hash
    (``SecretBox.digest``) bound to its factor. A code is spent by
    ``UPDATE ... SET used_at = :now WHERE used_at IS NULL``, so never twice."""

    __tablename__ = "recovery_codes"
    __table_args__ = (UniqueConstraint("factor_id", "code_hash", name="uq_recovery_codes_hash"),)

    id: str = Field(default_factory=new_id, primary_key=True, max_length=36)
    factor_id: str = Field(foreign_key="factors.id", ondelete="CASCADE", max_length=36)
    code_hash: bytes = Field(sa_column=Column(LargeBinary(32), nullable=False))
    created_at: int = Field(sa_type=BigInteger)
    used_at: int | None = Field(default=None, sa_type=BigInteger)


class LoginTransaction(SQLModel, table=True):
    """What an ``mfa_token`` points at: a password login waiting for its second factor."""

    __tablename__ = "login_transactions"

    id: str = Field(default_factory=new_id, primary_key=True, max_length=36)
    token_hash: bytes = Field(sa_column=Column(LargeBinary(32), unique=True, nullable=False))
    user_id: str = Field(foreign_key="users.id", ondelete="CASCADE", max_length=36, index=True)
    created_at: int = Field(sa_type=BigInteger)
    expires_at: int = Field(sa_type=BigInteger)
    failures: int = 0
    spent_at: int | None = Field(default=None, sa_type=BigInteger)
    # The open challenge of this login (an OCRA question, WebAuthn state), for one factor.
    challenge_factor_id: str | None = Field(default=None, max_length=36)
    challenge: str | None = Field(default=None, sa_type=Text)
    # "login" after a password; "step_up" for a signed-in user's fresh second factor, which
    # continues the refresh-token family ``family_id`` of the login it raises.
    purpose: str = Field(default="login", max_length=16)
    family_id: str | None = Field(default=None, max_length=36)
    # How many OCRA questions this login has asked: capped, because a response to a question-only
    # suite is single-use only as long as its question does not come up again.
    questions: int = 0


class HardwareToken(SQLModel, table=True):
    """A device with a serial number, imported from a vendor's seed file (PSKC or OATH CSV).

    In stock while ``factor_id`` is empty; assigned, it lends its key to one active factor of
    one user (sealed again for that factor's row). ``counter`` is the next acceptable counter or
    time step for the token's next holder: an assignment starts there, a return writes it back.
    """

    __tablename__ = "hardware_tokens"

    id: str = Field(default_factory=new_id, primary_key=True, max_length=36)
    serial: str = Field(max_length=64, unique=True)
    type: str = Field(max_length=16)  # hotp | totp | ocra
    secret: bytes = Field(sa_type=LargeBinary)  # sealed "hardware_token:<id>:secret"
    algorithm: str | None = Field(default=None, max_length=8)
    digits: int
    counter: int = Field(default=0, sa_type=BigInteger)
    period: int | None = None
    suite: str | None = Field(default=None, max_length=128)
    pin: bytes | None = Field(default=None, sa_type=LargeBinary)  # sealed OCRA PIN hash
    manufacturer: str | None = Field(default=None, max_length=64)
    # RFC 6030 section 5: the key may be used only between these times (inclusive).
    not_before: int | None = Field(default=None, sa_type=BigInteger)
    not_after: int | None = Field(default=None, sa_type=BigInteger)
    imported_at: int = Field(sa_type=BigInteger)
    factor_id: str | None = Field(
        default=None, foreign_key="factors.id", ondelete="SET NULL", max_length=36, unique=True
    )
    user_id: str | None = Field(
        default=None, foreign_key="users.id", ondelete="SET NULL", max_length=36, index=True
    )
    assigned_at: int | None = Field(default=None, sa_type=BigInteger)


class RefreshToken(SQLModel, table=True):
    """One link of a refresh-token family; a family is one login and shares ``family_id``."""

    __tablename__ = "refresh_tokens"

    id: str = Field(default_factory=new_id, primary_key=True, max_length=36)
    token_hash: bytes = Field(sa_column=Column(LargeBinary(32), unique=True, nullable=False))
    family_id: str = Field(max_length=36, index=True)
    user_id: str = Field(foreign_key="users.id", ondelete="CASCADE", max_length=36, index=True)
    auth_time: int = Field(sa_type=BigInteger)
    amr: str = Field(max_length=64)  # space-separated RFC 8176 values
    created_at: int = Field(sa_type=BigInteger)
    expires_at: int = Field(sa_type=BigInteger)
    spent_at: int | None = Field(default=None, sa_type=BigInteger)
    revoked_at: int | None = Field(default=None, sa_type=BigInteger)


class SigningKey(SQLModel, table=True):
    __tablename__ = "signing_keys"

    kid: str = Field(primary_key=True, max_length=64)
    private_key: bytes = Field(sa_type=LargeBinary)  # sealed PEM
    public_jwk: str = Field(sa_type=Text)
    created_at: int = Field(sa_type=BigInteger)
    # When it signs from (``mfa keys rotate --after``): published before, so that verifiers
    # holding a cached JWKS know it by then. None: at once (every key made before 0003, too).
    signs_from: int | None = Field(default=None, sa_type=BigInteger)
    # When it stopped, or stops, signing; it stays published for the tokens it signed.
    retired_at: int | None = Field(default=None, sa_type=BigInteger)


class Throttle(SQLModel, table=True):
    """Consecutive failures of one user's second factors, or of one username's passwords.

    ``key`` is ``"mfa:<user id>"`` or ``"pwd:<username key>"``. Updated only by atomic
    statements, so the count holds across threads, processes and hosts.
    """

    __tablename__ = "throttles"

    key: str = Field(primary_key=True, max_length=80)
    failures: int = 0
    blocked_until: int = Field(default=0, sa_type=BigInteger)
    locked: bool = False


class AuditEvent(SQLModel, table=True):
    __tablename__ = "audit_events"
    __table_args__ = (
        Index("ix_audit_user_time", "user_id", "time"),
        Index("ix_audit_time", "time"),
    )

    id: int | None = Field(default=None, primary_key=True)
    time: int = Field(sa_type=BigInteger)
    event: str = Field(max_length=40)
    user_id: str | None = Field(default=None, max_length=36)
    username: str | None = Field(default=None, max_length=64)
    ip: str | None = Field(default=None, max_length=64)
    user_agent: str | None = Field(default=None, sa_column=Column(String(256)))
    detail: str = Field(default="{}", sa_type=Text)  # JSON object


class WebauthnUser(SQLModel, table=True):
    """A user's WebAuthn user handle: random, stable, and nothing personal (WebAuthn section
    14.6.1 recommends 64 random bytes), kept from the first security key on."""

    __tablename__ = "webauthn_users"

    user_id: str = Field(
        foreign_key="users.id", ondelete="CASCADE", primary_key=True, max_length=36
    )
    user_handle: bytes = Field(sa_column=Column(LargeBinary(64), unique=True, nullable=False))
    created_at: int = Field(sa_type=BigInteger)


class WebauthnCredential(SQLModel, table=True):
    """The public key credential of a ``webauthn`` factor (one per factor); its label and status
    are the factor's. Nothing here is secret: the private key never leaves the authenticator."""

    __tablename__ = "webauthn_credentials"

    factor_id: str = Field(
        foreign_key="factors.id", ondelete="CASCADE", primary_key=True, max_length=36
    )
    # At most 1023 bytes (WebAuthn section 5.1.3); unique across all users.
    credential_id: bytes = Field(sa_column=Column(LargeBinary(1023), unique=True, nullable=False))
    # fido2's AttestedCredentialData: AAGUID, credential id and COSE public key, as registered.
    public_key: bytes = Field(sa_type=LargeBinary)
    algorithm: int  # COSE algorithm of the public key
    aaguid: str = Field(max_length=36)
    # The signature counter last seen (WebAuthn section 6.1.1); 0 for authenticators without one.
    sign_count: int = Field(default=0, sa_type=BigInteger)
    transports: str = Field(default="[]", max_length=256)  # JSON list, for allowCredentials
    backup_eligible: bool = False  # BE: fixed at registration (section 6.1.3)
    backed_up: bool = False  # BS: may change at each use
    user_verified: bool = False  # UV was seen at registration or at a later use
    attestation_format: str = Field(max_length=32)
    created_at: int = Field(sa_type=BigInteger)
    last_used_at: int | None = Field(default=None, sa_type=BigInteger)
