"""The OpenAPI 3.1 document served at ``/openapi.json``.

Request schemas come from the pydantic models the endpoints parse with, so the document cannot
drift from what the service accepts. Responses are described in words and examples; the full
contract is ``docs/api.md``.
"""

from __future__ import annotations

import re
from functools import cache
from typing import Any

from pydantic import BaseModel, TypeAdapter

from .. import schemas

_ERROR = {
    "type": "object",
    "required": ["error", "message"],
    "properties": {"error": {"type": "string"}, "message": {"type": "string"}},
}

# (method, path, summary, request body model, success status, needs bearer)
_OPERATIONS: list[tuple[str, str, str, Any, int, bool]] = [
    ("get", "/healthz", "The process serves (no database call)", None, 200, False),
    ("get", "/readyz", "The database answers (503 if not)", None, 200, False),
    ("get", "/.well-known/jwks.json", "Public signing keys (JWKS)", None, 200, False),
    ("post", "/api/users", "Sign up", schemas.Signup, 201, False),
    (
        "post",
        "/api/login",
        "Check the password; open a login transaction",
        schemas.Login,
        200,
        False,
    ),
    ("post", "/api/login/challenge", "Begin a second factor", schemas.LoginChallenge, 200, False),
    (
        "post",
        "/api/login/verify",
        "Finish the login with a second factor",
        schemas.LoginVerify,
        200,
        False,
    ),
    ("post", "/api/token/refresh", "Rotate a refresh token", schemas.RefreshTokenBody, 200, False),
    (
        "post",
        "/api/logout",
        "Revoke the login of a refresh token",
        schemas.RefreshTokenBody,
        204,
        False,
    ),
    ("get", "/api/me", "The caller, their amr and factors", None, 200, True),
    ("get", "/api/factors", "The caller's factors", None, 200, True),
    (
        "post",
        "/api/factors",
        "Enroll a factor (pending until confirmed)",
        schemas.EnrollRequest,
        201,
        True,
    ),
    ("patch", "/api/factors/{factor_id}", "Rename a factor", schemas.Rename, 200, True),
    ("delete", "/api/factors/{factor_id}", "Remove a factor (step-up if active)", None, 204, True),
    (
        "post",
        "/api/factors/{factor_id}/confirm",
        "Confirm a pending factor",
        schemas.Confirm,
        200,
        True,
    ),
    (
        "post",
        "/api/factors/{factor_id}/resync",
        "Resynchronize an HOTP factor",
        schemas.Resync,
        200,
        True,
    ),
    (
        "post",
        "/api/recovery-codes",
        "A new set of recovery codes, replacing any earlier set (step-up)",
        None,
        201,
        True,
    ),
]

# Other modules (admin, recovery codes, pages) add their operations here.
EXTRA_OPERATIONS: list[tuple[str, str, str, Any, int, bool]] = [
    ("get", "/api/admin/tokens", "The hardware-token inventory (admin)", None, 200, True),
    (
        "post",
        "/api/admin/tokens/import",
        "Import hardware tokens from a PSKC or OATH CSV seed file (admin)",
        schemas.TokenImport,
        200,
        True,
    ),
    (
        "post",
        "/api/admin/tokens/{serial}/assign",
        "Give a hardware token to a user as an active factor (admin)",
        schemas.TokenAssign,
        200,
        True,
    ),
    (
        "post",
        "/api/admin/tokens/{serial}/unassign",
        "Take a hardware token back into stock (admin)",
        None,
        200,
        True,
    ),
]


def _schema(model: Any) -> dict[str, Any]:
    if isinstance(model, type) and issubclass(model, BaseModel):
        return model.model_json_schema(ref_template="#/components/schemas/{model}")
    return TypeAdapter(model).json_schema(ref_template="#/components/schemas/{model}")


# Calls that answer without the database (and so never with its 503).
_WITHOUT_DATABASE = {"/healthz"}


@cache
def document() -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    components: dict[str, Any] = {"Error": _ERROR}
    error = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    for method, path, summary, model, status, bearer in _OPERATIONS + EXTRA_OPERATIONS:
        op: dict[str, Any] = {
            "summary": summary,
            "responses": {
                str(status): {"description": "Success"},
                "4XX": {"description": "Error", "content": error},
            },
        }
        if path not in _WITHOUT_DATABASE:
            op["responses"]["503"] = {
                "description": "The database is unavailable just now; try again after "
                "Retry-After seconds",
                "content": error,
            }
        names = re.findall(r"\{(\w+)\}", path)
        if names:
            op["parameters"] = [
                {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
                for name in names
            ]
        if model is not None:
            schema = _schema(model)
            components.update(schema.pop("$defs", {}))
            op["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": schema}},
            }
        if bearer:
            op["security"] = [{"bearer": []}]
        paths.setdefault(path, {})[method] = op
    return {
        "openapi": "3.1.0",
        "info": {"title": "MFA service", "version": "0.1.0"},
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
            },
        },
    }
