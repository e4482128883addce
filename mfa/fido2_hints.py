"""Cache the type hints python-fido2 resolves for every object it parses.

fido2 2.2.1 turns JSON into its frozen dataclasses (``RegistrationResponse``,
``AuthenticationResponse`` and what they hold) through ``fido2.utils._DataClassMapping``, whose
``_parse_from_dict`` and ``__post_init__`` both call ``typing.get_type_hints(cls)`` for every
object, every time. The classes never change after import, so the answer never changes either;
yet resolving it (string annotations evaluated against the module's globals) was about two thirds
of ``Fido2Server.authenticate_complete`` here (``bench/webauthn_verify.py`` prints the figures).

The shim replaces the name ``get_type_hints`` inside ``fido2.utils`` only (the module imported it
with ``from typing import get_type_hints``), by a function that resolves each class once. Nothing
else in the process is touched. It is pinned to the exact fido2 version it was checked against:
another version may no longer call ``get_type_hints`` this way, or may mutate what it returns, so
importing this module with any other version fails at once, loudly, instead of silently
changing (or not changing) fido2's behaviour. When fido2 is upgraded, read ``fido2/utils.py``
again, then move the pin (and drop this module if fido2 caches the hints itself).
"""

from __future__ import annotations

import typing
from collections.abc import Callable, Mapping
from importlib.metadata import version
from typing import Any

import fido2.utils

FIDO2_VERSION = "2.2.1"

_ORIGINAL: Callable[..., dict[str, Any]] = typing.get_type_hints

if version("fido2") != FIDO2_VERSION:
    raise RuntimeError(
        f"mfa.fido2_hints was written for fido2 {FIDO2_VERSION}, not {version('fido2')}: check "
        "that fido2/utils.py still resolves type hints per object, then move the pin"
    )
if fido2.utils.__dict__.get("get_type_hints") is not _ORIGINAL:
    raise RuntimeError("fido2.utils no longer uses typing.get_type_hints; read it again")
_hints: dict[type, dict[str, Any]] = {}


def _cached_type_hints(
    obj: Any,
    globalns: dict[str, Any] | None = None,
    localns: Mapping[str, Any] | None = None,
    include_extras: bool = False,
) -> dict[str, Any]:
    """``typing.get_type_hints`` for a class, resolved once per class.

    fido2 2.2.1 only ever calls it with the class alone and only reads the result, so one dict
    per class may be shared. Any other call goes to the original. Two threads that miss the
    cache at once both resolve the class and store equal dicts, which is harmless.
    """
    if globalns is not None or localns is not None or include_extras or not isinstance(obj, type):
        return _ORIGINAL(obj, globalns, localns, include_extras)
    hints = _hints.get(obj)
    if hints is None:
        hints = _hints[obj] = _ORIGINAL(obj)
    return hints


def install() -> None:
    """Make fido2 resolve each class's type hints once (idempotent)."""
    fido2.utils.__dict__["get_type_hints"] = _cached_type_hints


def uninstall() -> None:
    """Put fido2 back as it ships (for the benchmark and the test that compares both)."""
    fido2.utils.__dict__["get_type_hints"] = _ORIGINAL
    _hints.clear()


def installed() -> bool:
    return fido2.utils.__dict__.get("get_type_hints") is _cached_type_hints
