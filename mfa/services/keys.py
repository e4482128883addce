"""Signing keys: stored in the database, sealed, and cached briefly in each process.

Every instance of a deployment reads the same rows, so all sign with the same current key and
publish the same JWKS. A rotation on one instance reaches the others when their cache expires
(``MFA_KEY_CACHE_SECONDS``), or at once when they meet a token with a ``kid`` they do not know.
Keys are made one at a time (``_lock_keys``): instances starting together on an empty database
make one first key between them, not one each, which the others would not yet know.

A rotation may publish its key before the key signs (``rotate(after=...)``): verifiers that
refetch the JWKS only when their copy expires then know the key before the first token it signs.
Each instance holds the keys that sign now or will, each with its moment, and picks the signer
by the clock at each token: every instance that has loaded the staged key switches to it at
the same second, with no reload.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from joserfc.jwk import ECKey, KeySet
from sqlalchemy import exists, or_, select, text, update
from sqlmodel import Session, col

from .. import jwt
from ..config import Settings
from ..db import Database, dialect_name
from ..models import SigningKey
from ..secretbox import SecretBox
from . import audit

if TYPE_CHECKING:
    from ..context import RequestMeta

# Tokens may be checked a little after they expire elsewhere (clock skew); keep retired keys
# published for that long beyond the access-token lifetime.
_SKEW_SECONDS = 60
# A token with an unknown kid forces a reload, but not more often than this: made-up kids cost
# at most one read a second.
_MISS_RELOAD_SECONDS = 1.0


@dataclass(frozen=True)
class _Signer:
    key: ECKey
    signs_from: int | None  # None: at once, on every instance, whatever its clock says
    retired_at: int | None  # when it stops signing, if it does

    def started(self, now: int) -> bool:
        return self.signs_from is None or self.signs_from <= now

    def signs_at(self, now: int) -> bool:
        return self.started(now) and (self.retired_at is None or self.retired_at > now)


@dataclass(frozen=True)
class _Snapshot:
    signers: tuple[_Signer, ...]  # the keys that sign now or will, the newest first
    published: KeySet
    jwks: dict[str, Any]
    loaded_at: float


class KeyStore:
    def __init__(
        self, db: Database, box: SecretBox, *, settings: Settings, clock: Callable[[], float]
    ) -> None:
        self._db = db
        self._box = box
        self._settings = settings
        self._clock = clock
        self._lock = threading.Lock()
        self._snapshot: _Snapshot | None = None
        self._missed_at = -_MISS_RELOAD_SECONDS  # when an unknown kid last made us reload

    def signer(self) -> ECKey:
        return self._signer_of(self._current())

    def keyset(self) -> KeySet:
        return self._current().published

    def jwks(self) -> dict[str, Any]:
        return self._current().jwks

    def cached_signer(self) -> ECKey | None:
        """The current signing key if the cache is fresh: usable in the event loop."""
        snap = self._cached()
        return self._signer_of(snap) if snap is not None else None

    def _signer_of(self, snap: _Snapshot) -> ECKey:
        """The newest key whose turn it is now. A staged rotation makes its key's start the
        old key's retirement, so one is due at any second. An immediate one retires the old
        key at the clock of the instance that rotated, which may run ahead of this one's: the
        newest key wins meanwhile, so it signs at once everywhere, as it did before staging."""
        now = int(self._clock())
        due = [s for s in snap.signers if s.signs_at(now)]
        started = [s for s in snap.signers if s.started(now)]
        return (due or started or list(snap.signers[-1:]))[0].key

    def cached(self, kid: str) -> KeySet | None:
        """The published keys, if ``kid`` is one of them and the cache is fresh: what a token
        can be checked against in the event loop, without reading the database. None when that
        takes a read first (the cache has expired, or ``kid`` is new to it)."""
        snap = self._cached()
        return snap.published if snap is not None and _publishes(snap, kid) else None

    def knows(self, kid: str) -> bool:
        """Whether ``kid`` is published, reloading if it is not (a fresh rotation elsewhere).
        The limit counts from the last such reload, not from the last load: a rotation made
        just after this instance loaded its keys is seen by the first token that needs it."""
        asked = time.monotonic()
        if _publishes(self._current(), kid):
            return True
        with self._lock:
            snap = self._snapshot
            if snap is not None and snap.loaded_at >= asked:
                # Loaded since the question (just now, on an expired cache, or by a thread this
                # one waited for): a reload would read the same rows.
                return _publishes(snap, kid)
            if time.monotonic() - self._missed_at < _MISS_RELOAD_SECONDS:
                return False
            self._missed_at = time.monotonic()
            return _publishes(self._load(), kid)

    def invalidate(self) -> None:
        with self._lock:
            self._snapshot = None

    def _current(self) -> _Snapshot:
        return self._cached() or self._reload()

    def _cached(self) -> _Snapshot | None:
        """The keys as last loaded, if that was at most ``key_cache_seconds`` ago."""
        snap = self._snapshot
        if snap is None or time.monotonic() - snap.loaded_at > self._settings.key_cache_seconds:
            return None
        return snap

    def _reload(self) -> _Snapshot:
        with self._lock:
            return self._load()

    def _load(self) -> _Snapshot:
        """Read the keys (making the first one if there is none); hold ``_lock``."""
        now = int(self._clock())
        with self._db.read() as session:
            rows = published_keys(session, now, self._settings.access_token_ttl)
        if not rows:
            with self._db.write() as session:
                make_first(session, self._box, now)
            with self._db.read() as session:
                rows = published_keys(session, now, self._settings.access_token_ttl)
        signers = tuple(
            _Signer(
                key=jwt.load_private(self._box.open(r.private_key, context=_context(r.kid)), r.kid),
                signs_from=r.signs_from,
                retired_at=r.retired_at,
            )
            for r in rows
            if r.retired_at is None or r.retired_at > now
        )
        public = [json.loads(r.public_jwk) for r in rows]
        snap = _Snapshot(
            signers=signers,
            published=jwt.keyset(public),
            jwks={"keys": public},
            loaded_at=time.monotonic(),
        )
        self._snapshot = snap
        return snap


def _publishes(snap: _Snapshot, kid: str) -> bool:
    return any(k.kid == kid for k in snap.published.keys)


def published_keys(session: Session, now: int, access_ttl: int) -> list[SigningKey]:
    """The keys that sign now or will, and retired keys whose tokens may still be alive; the
    newest first. Keys are made one at a time, so one signs at any moment; should a database
    hold two unretired keys (made before that was so), the newest wins."""
    cutoff = now - access_ttl - _SKEW_SECONDS
    return list(
        session.scalars(
            select(SigningKey)
            .where(or_(col(SigningKey.retired_at).is_(None), col(SigningKey.retired_at) > cutoff))
            .order_by(col(SigningKey.created_at).desc(), col(SigningKey.kid))
        ).all()
    )


def make_first(session: Session, box: SecretBox, now: int) -> None:
    """Make a first key unless another instance has just made one."""
    _lock_keys(session)
    if not session.scalar(select(exists().where(col(SigningKey.retired_at).is_(None)))):
        _replace_current(session, box, now)


def _lock_keys(session: Session) -> None:
    """Keys are made one transaction at a time, until it commits; reads go on meanwhile.
    SQLite's writers already take turns (``BEGIN IMMEDIATE``). PostgreSQL's share row
    exclusive mode conflicts with itself and with writes, not with reads."""
    if dialect_name(session) == "postgresql":
        session.execute(text("LOCK TABLE signing_keys IN SHARE ROW EXCLUSIVE MODE"))


def rotate(session: Session, box: SecretBox, now: int, *, after: int = 0) -> str:
    """Make a new key, published at once, that signs ``after`` seconds from ``now``, when the
    keys signing until then retire; return its kid. Two rotations at once take turns: the
    second retires the first's new key (before it signs, if it had not started yet)."""
    _lock_keys(session)
    return _replace_current(session, box, now, after=after)


def _replace_current(session: Session, box: SecretBox, now: int, *, after: int = 0) -> str:
    if after < 0:
        raise ValueError("a key cannot start signing in the past")
    key = jwt.generate_key()
    kid = str(key.kid)
    starts = now + after
    # Every key that would still sign at ``starts`` stops then: the current one, and one that
    # an earlier rotation staged.
    session.execute(
        update(SigningKey)
        .where(or_(col(SigningKey.retired_at).is_(None), col(SigningKey.retired_at) > starts))
        .values(retired_at=starts)
    )
    session.add(
        SigningKey(
            kid=kid,
            private_key=box.seal(jwt.private_pem(key), context=_context(kid)),
            public_jwk=json.dumps(jwt.public_jwk(key)),
            created_at=now,
            signs_from=starts if after else None,
        )
    )
    return kid


def _context(kid: str) -> str:
    return f"signing_key:{kid}:private_key"


def rotate_now(db: Database, box: SecretBox, now: int, meta: RequestMeta, *, after: int = 0) -> str:
    """``mfa keys rotate``: a new key signs from now on, or from ``after`` seconds on and
    published meanwhile; the old one stays published for the tokens it signed."""
    with db.write() as session:
        kid = rotate(session, box, now, after=after)
        audit.record(
            session, "signing_key_rotated", now=now, meta=meta, kid=kid, signs_from=now + after
        )
    return kid
