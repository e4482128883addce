"""Settings, read once from the environment (``MFA_*``)."""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit


class ConfigError(ValueError):
    """A setting is present but unusable; the message names it."""


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    database_url: str
    origins: tuple[str, ...]
    issuer: str
    otp_issuer: str
    audience: str
    rp_id: str
    rp_name: str
    encryption_key: bytes | None
    open_signup: bool
    access_token_ttl: int
    refresh_token_ttl: int
    step_up_max_age: int
    mfa_token_ttl: int
    webauthn_user_verification: str
    webauthn_resident_key: str
    trusted_proxies: tuple[str, ...]
    key_cache_seconds: int
    audit_retention_days: int
    prune_interval: int
    db_pool_size: int = 10
    db_max_overflow: int = 10
    log_level: str = "INFO"
    access_log: bool = True
    hash_concurrency: int = 1
    worker_threads: int = 2  # from_env picks it by database: see _default_worker_threads

    @property
    def origin(self) -> str:
        """The primary origin: the first of ``MFA_ORIGIN``."""
        return self.origins[0]

    def origins_outside_rp_id(self) -> list[str]:
        """Origins whose host is neither ``rp_id`` nor below it: security keys refuse
        ceremonies there (WebAuthn section 5.1.4.1, "RP ID")."""
        outside = []
        for origin in self.origins:
            host = urlsplit(origin).hostname or ""
            if host != self.rp_id and not host.endswith("." + self.rp_id):
                outside.append(origin)
        return outside

    @property
    def secure_cookies(self) -> bool:
        return self.origin.startswith("https://")

    @property
    def is_sqlite(self) -> bool:
        return _is_sqlite(self.database_url)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        data_dir = Path(env.get("MFA_DATA_DIR", "./var")).resolve()
        origins = _origins(env.get("MFA_ORIGIN", "http://localhost:8000"))
        origin = origins[0]
        issuer = env.get("MFA_ISSUER", origin)
        uv = env.get("MFA_WEBAUTHN_USER_VERIFICATION", "preferred")
        if uv not in ("required", "preferred", "discouraged"):
            raise ConfigError(
                "MFA_WEBAUTHN_USER_VERIFICATION must be required|preferred|discouraged"
            )
        rk = env.get("MFA_WEBAUTHN_RESIDENT_KEY", "discouraged")
        if rk not in ("required", "preferred", "discouraged"):
            raise ConfigError("MFA_WEBAUTHN_RESIDENT_KEY must be required|preferred|discouraged")
        database_url = env.get("MFA_DATABASE_URL") or f"sqlite:///{data_dir / 'mfa.db'}"
        return cls(
            data_dir=data_dir,
            database_url=database_url,
            origins=origins,
            issuer=issuer,
            otp_issuer=env.get("MFA_OTP_ISSUER") or (urlsplit(origin).hostname or "mfa"),
            audience=env.get("MFA_AUDIENCE", issuer),
            rp_id=env.get("MFA_RP_ID", "localhost"),
            rp_name=env.get("MFA_RP_NAME", "MFA"),
            encryption_key=_key(env.get("MFA_ENCRYPTION_KEY")),
            open_signup=_bool(env, "MFA_OPEN_SIGNUP", default=True),
            access_token_ttl=_seconds(env, "MFA_ACCESS_TOKEN_TTL", 600),
            refresh_token_ttl=_seconds(env, "MFA_REFRESH_TOKEN_TTL", 14 * 24 * 3600),
            step_up_max_age=_seconds(env, "MFA_STEP_UP_MAX_AGE", 300),
            mfa_token_ttl=_seconds(env, "MFA_MFA_TOKEN_TTL", 300),
            webauthn_user_verification=uv,
            webauthn_resident_key=rk,
            trusted_proxies=tuple(
                p.strip() for p in env.get("MFA_TRUSTED_PROXIES", "").split(",") if p.strip()
            ),
            key_cache_seconds=_seconds(env, "MFA_KEY_CACHE_SECONDS", 30),
            db_pool_size=_positive(env, "MFA_DB_POOL_SIZE", 10),
            db_max_overflow=_count(env, "MFA_DB_MAX_OVERFLOW", 10),
            log_level=_level(env.get("MFA_LOG_LEVEL", "INFO")),
            access_log=_bool(env, "MFA_ACCESS_LOG", default=True),
            worker_threads=_positive(
                env, "MFA_WORKER_THREADS", _default_worker_threads(database_url)
            ),
            # Password hashes at once in this process; `mfa serve` shares the cores among its
            # workers, since argon2id past one hash per core only thrashes caches.
            hash_concurrency=_positive(env, "MFA_HASH_CONCURRENCY", os.cpu_count() or 1),
            audit_retention_days=_count(env, "MFA_AUDIT_RETENTION_DAYS", 365),
            prune_interval=_count(env, "MFA_PRUNE_INTERVAL", 3600),
        )


def _default_worker_threads(database_url: str) -> int:
    """Threads per process for blocking work. The work is mostly Python holding the GIL, so
    threads past a few only take turns at it, and on SQLite the one writer would keep them
    waiting anyway: a thread waiting for the write lock behind one that waits for the GIL
    (measured on 2 cores: TOTP verifies 590/s with 8 threads, 740/s with 2). PostgreSQL gets
    a few more, to cover network round trips."""
    return 2 if _is_sqlite(database_url) else 4


def _is_sqlite(database_url: str) -> bool:
    return database_url.startswith("sqlite")


def _origins(value: str) -> tuple[str, ...]:
    origins = tuple(o.strip().rstrip("/") for o in value.split(",") if o.strip())
    for o in origins:
        parts = urlsplit(o)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.path:
            raise ConfigError(f"MFA_ORIGIN: {o!r} is not an origin like https://example.com")
    if not origins:
        raise ConfigError("MFA_ORIGIN is empty")
    return origins


def _key(value: str | None) -> bytes | None:
    if not value:
        return None
    try:
        key = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except (binascii.Error, ValueError):
        raise ConfigError("MFA_ENCRYPTION_KEY is not base64url") from None
    if len(key) != 32:
        raise ConfigError("MFA_ENCRYPTION_KEY must encode exactly 32 bytes")
    return key


def _bool(env: Mapping[str, str], name: str, *, default: bool) -> bool:
    value = env.get(name)
    if value is None or value == "":
        return default
    if value.lower() in ("1", "true", "yes", "on"):
        return True
    if value.lower() in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name} must be true or false")


def _level(value: str) -> str:
    level = value.upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ConfigError("MFA_LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR")
    return level


def _seconds(env: Mapping[str, str], name: str, default: int) -> int:
    return _positive(env, name, default, "a whole number of seconds")


def _positive(env: Mapping[str, str], name: str, default: int, what: str = "a whole number") -> int:
    """A whole number, 1 or more (a duration, a pool size, a thread count)."""
    value = env.get(name)
    if value is None or value == "":
        return default
    try:
        number = int(value)
    except ValueError:
        raise ConfigError(f"{name} must be {what}") from None
    if number <= 0:
        raise ConfigError(f"{name} must be positive")
    return number


def _count(env: Mapping[str, str], name: str, default: int) -> int:
    """A whole number, 0 or more (0 turns the feature off)."""
    value = env.get(name)
    if value is None or value == "":
        return default
    try:
        number = int(value)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number") from None
    if number < 0:
        raise ConfigError(f"{name} must be 0 or more")
    return number
