"""The API's request bodies, validated strictly: a wrong type is an error, never coerced.

Responses are plain dicts built by the services; none of them ever holds a stored secret.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    model_validator,
)

from . import ocra
from .factors.ocra import DEFAULT_SUITE, servable

USERNAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._@+-]{0,63}$"


def _clean_label(value: str) -> str:
    value = " ".join(value.split())
    if not value:
        raise ValueError("the label is empty")
    if any(not ch.isprintable() for ch in value):
        raise ValueError("the label has unprintable characters")
    return value


def _printable(value: str) -> str:
    # PostgreSQL text cannot hold NUL, and no name, code or label needs a control character.
    if not value.isprintable():
        raise ValueError("unprintable characters")
    return value


Username = Annotated[str, StringConstraints(pattern=USERNAME_PATTERN)]
# Long enough for the policy's own message (mfa.passwords) to be the one a user sees.
Password = Annotated[str, StringConstraints(max_length=4096)]
Label = Annotated[str, StringConstraints(max_length=64), AfterValidator(_clean_label)]
Token = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_\-]{1,512}$")]
Code = Annotated[str, StringConstraints(pattern=r"^[ -~]{1,64}$")]
Id = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_\-]{1,64}$")]
Credential = Annotated[dict[str, Any], Field()]


class Body(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)


class Signup(Body):
    username: Username
    password: Password


class Login(Body):
    # Any string up to the limit: an unknown or oddly spelled username must cost and answer the
    # same as a wrong password, never a different error.
    username: Annotated[
        str, StringConstraints(min_length=1, max_length=256), AfterValidator(_printable)
    ]
    password: Password


class LoginChallenge(Body):
    mfa_token: Token
    factor_id: Id


class LoginVerify(Body):
    mfa_token: Token
    factor_id: Id | None = None
    code: Code | None = None
    credential: Credential | None = None
    # The browser pages: put the refresh token in an HttpOnly cookie instead of the body.
    cookie: bool = False


class RefreshTokenBody(Body):
    refresh_token: Token


class TotpEnroll(Body):
    type: Literal["totp"]
    label: Label = "Authenticator app"
    algorithm: Literal["SHA1", "SHA256", "SHA512"] = "SHA1"
    digits: Literal[6, 8] = 6
    period: Literal[30, 60] = 30


class HotpEnroll(Body):
    type: Literal["hotp"]
    label: Label = "Authenticator app (counter)"
    algorithm: Literal["SHA1", "SHA256", "SHA512"] = "SHA1"
    digits: Literal[6, 8] = 6


class WebauthnEnroll(Body):
    type: Literal["webauthn"]
    label: Label = "Security key"


def _ocra_suite(value: str) -> str:
    try:
        servable(value)
    except ocra.SuiteError:
        # The parser's own message quotes the part it could not read; say it without echoing.
        raise ValueError(
            "not a valid OCRA suite (RFC 6287 section 6), e.g. OCRA-1:HOTP-SHA1-6:QN08"
        ) from None
    return value


OcraSuiteText = Annotated[str, StringConstraints(max_length=128), AfterValidator(_ocra_suite)]
# The PIN a PIN suite (P) hashes into every response: typed on the token, never stored here
# (only its hash is, sealed).
OcraPin = Annotated[str, StringConstraints(min_length=4, max_length=64), AfterValidator(_printable)]


class OcraEnroll(Body):
    type: Literal["ocra"]
    label: Label = "Challenge-response token"
    suite: OcraSuiteText = DEFAULT_SUITE
    pin: OcraPin | None = None

    @model_validator(mode="after")
    def _pin_as_the_suite_says(self) -> OcraEnroll:
        takes_pin = ocra.parse_suite(self.suite).pin_hash_name is not None
        if takes_pin and self.pin is None:
            raise ValueError("this suite hashes a PIN (P) into every response: give the pin")
        if not takes_pin and self.pin is not None:
            raise ValueError("this suite takes no PIN: leave pin out")
        return self


EnrollRequest = Annotated[
    TotpEnroll | HotpEnroll | OcraEnroll | WebauthnEnroll, Field(discriminator="type")
]


class Confirm(Body):
    code: Code | None = None
    credential: Credential | None = None
    cookie: bool = False  # as for LoginVerify, when this confirmation finishes a login


class Rename(Body):
    label: Label


class Resync(Body):
    code1: Code
    code2: Code


# What ``PublicKeyCredential.toJSON()`` returns (WebAuthn Level 3, section 5.1: the
# RegistrationResponseJSON and AuthenticationResponseJSON dictionaries). Only the JSON types are
# checked here, so that a body of the wrong shape is a 400; whether the values are right is the
# security key handler's question (a 401 when they are not).

# Base64URLString: base64url without padding (WebAuthn section 5.1); a credential id is at most
# 1023 bytes (section 5.1.3), so no field of a 64 KiB body needs to be longer.
Base64Url = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]*$", max_length=65536)]
ShortText = Annotated[str, StringConstraints(max_length=64)]


class _Json(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)


class AttestationResponseJson(_Json):
    clientDataJSON: Base64Url
    attestationObject: Base64Url
    authenticatorData: Base64Url | None = None
    transports: list[str] | None = Field(default=None, max_length=16)
    publicKey: Base64Url | None = None
    publicKeyAlgorithm: int | None = None


class AssertionResponseJson(_Json):
    clientDataJSON: Base64Url
    authenticatorData: Base64Url
    signature: Base64Url
    userHandle: Base64Url | None = None


class _CredentialJson(_Json):
    id: Base64Url
    rawId: Base64Url
    type: ShortText
    authenticatorAttachment: ShortText | None = None
    clientExtensionResults: dict[str, Any] = Field(default_factory=dict)


class RegistrationCredential(_CredentialJson):
    """``create()``'s credential, as ``toJSON()`` serializes it."""

    response: AttestationResponseJson


class AssertionCredential(_CredentialJson):
    """``get()``'s credential, as ``toJSON()`` serializes it."""

    response: AssertionResponseJson


SeedText = Annotated[str, StringConstraints(min_length=1, max_length=64 * 1024)]


class TokenImport(Body):
    """A seed file for ``/api/admin/tokens/import``: PSKC XML text, or OATH CSV text."""

    pskc: SeedText | None = None
    csv: SeedText | None = None
    password: Annotated[str, StringConstraints(min_length=1, max_length=1024)] | None = None
    key_hex: Annotated[str, StringConstraints(pattern=r"^[0-9A-Fa-f]{32,64}$")] | None = None
    dry_run: bool = False

    @model_validator(mode="after")
    def _one_file(self) -> TokenImport:
        if (self.pskc is None) == (self.csv is None):
            raise ValueError("give the seed file as pskc (XML text) or as csv, not both")
        return self


class TokenAssign(Body):
    username: Username
