"""The browser pages over HTTP: their headers and static files, the session cookie, step-up."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

import jwt as pyjwt
import pytest
from starlette.testclient import TestClient

from mfa.api.pages import CSP, PAGES
from mfa.api.session import COOKIE_NAME, COOKIE_PATH
from mfa.app import create_app
from mfa.config import Settings

from .helpers import Account, bearer, enroll_first_totp, login, signup, totp_code

ORIGIN = "http://localhost:8000"  # the test settings' MFA_ORIGIN default
WEB = Path(__file__).resolve().parent.parent / "web"


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.script_text = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        self._in_script = tag == "script"

    def handle_endtag(self, tag: str) -> None:
        self._in_script = False

    def handle_data(self, data: str) -> None:
        if getattr(self, "_in_script", False):
            self.script_text += data


def parse(html: str) -> _Tags:
    parser = _Tags()
    parser.feed(html)
    return parser


def set_cookie_of(response) -> str:
    cookies = [v for k, v in response.headers.multi_items() if k == "set-cookie"]
    assert len(cookies) == 1, cookies
    return cookies[0]


def attributes(set_cookie: str) -> dict[str, str]:
    parts = [p.strip() for p in set_cookie.split(";")]
    return {p.split("=", 1)[0].lower(): (p.split("=", 1)[1] if "=" in p else "") for p in parts[1:]}


def cookie_login(client: TestClient, account: Account, clock, *, origin: str = ORIGIN):
    """Log in with the app's next code, asking for the refresh token as a cookie."""
    factor = next(iter(account.factors.values()))
    clock.advance(30)
    start = login(client, account)
    return client.post(
        "/api/login/verify",
        json={
            "mfa_token": start["mfa_token"],
            "factor_id": factor["id"],
            "code": totp_code(factor["secret"], clock()),
            "cookie": True,
        },
        headers={"Origin": origin},
    )


@pytest.mark.parametrize("path", list(PAGES))
def test_pages_carry_a_strict_csp_and_no_inline_script(client, path):
    r = client.get(path)
    assert r.status_code == 200
    assert r.headers["content-type"] == "text/html; charset=utf-8"
    assert r.headers["content-security-policy"] == CSP
    policy = dict(d.strip().split(" ", 1) for d in CSP.split(";"))
    assert policy["script-src"] == "'self'"
    assert policy["frame-ancestors"] == "'none'"
    assert "unsafe" not in CSP
    assert r.headers["referrer-policy"] == "no-referrer"
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["cache-control"] == "no-cache"

    page = parse(r.text)
    assert page.script_text.strip() == ""
    for tag, attrs in page.tags:
        assert not any(name.startswith("on") for name in attrs), (tag, attrs)
        assert "style" not in attrs, (tag, attrs)
        if tag == "script":
            assert attrs.get("type") == "module"
            assert (attrs.get("src") or "").startswith("/static/")
        for name in ("src", "href"):
            value = attrs.get(name) or ""
            # Nothing from elsewhere: our own paths, or the empty data: favicon.
            assert value.startswith("/") or value in ("", "data:,"), (tag, attrs)


def test_every_module_and_stylesheet_a_page_names_is_served_and_cached_for_good(client):
    seen: set[str] = set()
    for path in PAGES:
        for tag, attrs in parse(client.get(path).text).tags:
            url = attrs.get("src") if tag == "script" else attrs.get("href")
            if url and url.startswith("/static/"):
                seen.add(url)
    assert seen
    version = next(iter(seen)).split("/")[2]
    modules = {p.name for p in (WEB / "static").glob("*.js")}
    for name in modules:  # the modules import each other: every one is served
        seen.add(f"/static/{version}/{name}")
    for url in sorted(seen):
        r = client.get(url)
        assert r.status_code == 200, url
        assert r.headers["cache-control"] == "public, max-age=31536000, immutable"
        assert r.headers["x-content-type-options"] == "nosniff"
        expected = "text/css" if url.endswith(".css") else "text/javascript"
        assert r.headers["content-type"].startswith(expected)
        again = client.get(url, headers={"If-None-Match": r.headers["etag"]})
        assert again.status_code == 304


def test_static_files_of_another_version_or_outside_the_set_are_not_found(client):
    html = client.get("/").text
    url = re.search(r'src="(/static/[^"]+)"', html).group(1)
    version = url.split("/")[2]
    assert client.get(url.replace(version, "0" * len(version))).status_code == 404
    assert client.get(f"/static/{version}/nothing.js").status_code == 404
    assert client.get(f"/static/{version}/../../pyproject.toml").status_code == 404
    assert client.get(f"/static/{version}/%2e%2e/%2e%2e/pyproject.toml").status_code == 404
    r = client.get(f"/static/{version}/nothing.js")
    assert r.json()["error"] == "not_found"


def test_the_modules_keep_tokens_out_of_storage_and_fetch_nothing_from_elsewhere():
    for path in sorted((WEB / "static").glob("*.js")):
        # Code only: the comments may say what the code must not do.
        source = re.sub(r"(^|\s)//.*$", "", path.read_text(), flags=re.MULTILINE)
        for banned in ("localStorage", "sessionStorage", "document.cookie", "innerHTML", "eval("):
            assert banned not in source, (path.name, banned)
        assert not re.search(r"https?://", source), path.name
        # Only relative imports of our own modules.
        for spec in re.findall(r'from\s+"([^"]+)"', source):
            assert spec.startswith("./"), spec
            assert (WEB / "static" / spec[2:]).is_file(), spec


def test_verify_with_cookie_puts_the_refresh_token_in_an_httponly_strict_cookie(client, clock):
    account = signup(client)
    enroll_first_totp(client, account, clock)
    r = cookie_login(client, account, clock)
    assert r.status_code == 200, r.text
    body = r.json()
    assert "refresh_token" not in body
    assert body["token_type"] == "Bearer"
    assert r.headers["cache-control"] == "no-store"
    header = set_cookie_of(r)
    assert header.startswith(f"{COOKIE_NAME}=")
    attrs = attributes(header)
    assert "httponly" in attrs
    assert attrs["samesite"].lower() == "strict"
    assert attrs["path"] == COOKIE_PATH
    assert "secure" not in attrs  # http://localhost: a Secure cookie would never come back
    assert int(attrs["max-age"]) == Settings.from_env({}).refresh_token_ttl


def test_the_cookie_is_secure_when_the_origin_is_https(env, clock):
    origin = "https://mfa.example"
    settings = Settings.from_env({**env, "MFA_ORIGIN": origin})
    with TestClient(create_app(settings, clock=clock), base_url=origin) as client:
        account = signup(client)
        enroll_first_totp(client, account, clock)
        r = cookie_login(client, account, clock, origin=origin)
        assert r.status_code == 200, r.text
        assert "secure" in attributes(set_cookie_of(r))
        refreshed = client.post(f"{COOKIE_PATH}/refresh", headers={"Origin": origin})
        assert refreshed.status_code == 200
        assert "secure" in attributes(set_cookie_of(refreshed))


@pytest.mark.parametrize("origin", [None, "http://evil.example", "http://localhost:8001", "null"])
def test_verify_with_cookie_from_another_origin_is_refused_before_the_code_is_checked(
    client, clock, origin
):
    account = signup(client)
    factor = enroll_first_totp(client, account, clock)
    clock.advance(30)
    start = login(client, account)
    body = {
        "mfa_token": start["mfa_token"],
        "factor_id": factor["id"],
        "code": totp_code(factor["secret"], clock()),
        "cookie": True,
    }
    headers = {"Origin": origin} if origin else {}
    r = client.post("/api/login/verify", json=body, headers=headers)
    assert r.status_code == 403
    assert r.json()["error"] == "forbidden"
    assert "set-cookie" not in r.headers
    # Nothing was spent: the same code still finishes the same login from our origin.
    ok = client.post("/api/login/verify", json=body, headers={"Origin": ORIGIN})
    assert ok.status_code == 200, ok.text


def test_confirming_a_first_factor_can_set_the_cookie(client, clock):
    account = signup(client)
    start = login(client, account)
    mfa = bearer(start["mfa_token"])
    factor = client.post("/api/factors", json={"type": "totp"}, headers=mfa).json()
    confirm = {"code": totp_code(factor["secret"], clock()), "cookie": True}
    url = f"/api/factors/{factor['id']}/confirm"
    assert client.post(url, json=confirm, headers=mfa).status_code == 403  # no Origin
    r = client.post(url, json=confirm, headers={**mfa, "Origin": ORIGIN})
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "active"
    assert "access_token" in r.json()
    assert "refresh_token" not in r.json()
    assert attributes(set_cookie_of(r))["path"] == COOKIE_PATH


def test_session_refresh_rotates_the_cookie_and_a_replayed_one_ends_the_login(client, clock):
    account = signup(client)
    enroll_first_totp(client, account, clock)
    assert cookie_login(client, account, clock).status_code == 200
    first = client.cookies[COOKIE_NAME]

    r = client.post(f"{COOKIE_PATH}/refresh", headers={"Origin": ORIGIN})
    assert r.status_code == 200, r.text
    assert set(r.json()) == {"access_token", "token_type", "expires_in", "amr"}
    second = client.cookies[COOKIE_NAME]
    assert second != first
    assert client.get("/api/me", headers=bearer(r.json()["access_token"])).status_code == 200

    # The spent cookie again (a copy someone kept): the whole login ends, the current one too.
    client.cookies.clear()
    replay = client.post(f"{COOKIE_PATH}/refresh", headers=with_cookie(first))
    assert replay.status_code == 401
    assert replay.json()["error"] == "invalid_grant"
    assert client.post(f"{COOKIE_PATH}/refresh", headers=with_cookie(second)).status_code == 401


def with_cookie(value: str) -> dict[str, str]:
    return {"Origin": ORIGIN, "Cookie": f"{COOKIE_NAME}={value}"}


@pytest.mark.parametrize("endpoint", ["refresh", "logout"])
@pytest.mark.parametrize("origin", [None, "http://evil.example", "https://localhost:8000"])
def test_session_endpoints_refuse_other_origins_and_leave_the_cookie_alone(
    client, clock, endpoint, origin
):
    account = signup(client)
    enroll_first_totp(client, account, clock)
    assert cookie_login(client, account, clock).status_code == 200
    cookie = client.cookies[COOKIE_NAME]
    headers = {"Origin": origin} if origin else {}
    r = client.post(f"{COOKIE_PATH}/{endpoint}", headers=headers)
    assert r.status_code == 403
    assert r.json()["error"] == "forbidden"
    assert "set-cookie" not in r.headers
    assert client.cookies[COOKIE_NAME] == cookie
    assert client.post(f"{COOKIE_PATH}/refresh", headers={"Origin": ORIGIN}).status_code == 200


def test_session_refresh_without_a_cookie_is_invalid_grant_and_clears_it(client):
    r = client.post(f"{COOKIE_PATH}/refresh", headers={"Origin": ORIGIN})
    assert r.status_code == 401
    assert r.json()["error"] == "invalid_grant"
    attrs = attributes(set_cookie_of(r))
    assert attrs["max-age"] == "0"
    assert attrs["path"] == COOKIE_PATH


def test_session_logout_revokes_the_login_and_clears_the_cookie(client, clock):
    account = signup(client)
    enroll_first_totp(client, account, clock)
    assert cookie_login(client, account, clock).status_code == 200
    cookie = client.cookies[COOKIE_NAME]
    r = client.post(f"{COOKIE_PATH}/logout", headers={"Origin": ORIGIN})
    assert r.status_code == 204
    assert attributes(set_cookie_of(r))["max-age"] == "0"
    assert COOKIE_NAME not in client.cookies
    # Revoked, not only forgotten: the token itself no longer refreshes anywhere.
    again = client.post("/api/token/refresh", json={"refresh_token": cookie})
    assert again.status_code == 401


def claims(token: str) -> dict:
    return pyjwt.decode(token, options={"verify_signature": False})


def step_up_verify(client, start, factor, clock, **extra):
    return client.post(
        "/api/login/verify",
        json={
            "mfa_token": start["mfa_token"],
            "factor_id": factor["id"],
            "code": totp_code(factor["secret"], clock()),
            **extra,
        },
        **({"headers": {"Origin": ORIGIN}} if extra.get("cookie") else {}),
    )


def test_step_up_gives_a_fresh_auth_time_in_the_same_login(client, clock, settings):
    account = signup(client)
    factor = enroll_first_totp(client, account, clock)
    first = account.tokens
    clock.advance(settings.step_up_max_age + 30)
    remove = client.delete(f"/api/factors/{factor['id']}", headers=account.access)
    assert remove.status_code == 401
    assert remove.json()["error"] == "step_up_required"

    r = client.post("/api/step-up", headers=account.access)
    assert r.status_code == 200, r.text
    start = r.json()
    assert set(start) == {"mfa_token", "expires_in", "factors"}
    assert start["factors"] == [{"id": factor["id"], "type": "totp", "label": "phone"}]
    verified = step_up_verify(client, start, factor, clock)
    assert verified.status_code == 200, verified.text
    fresh = verified.json()
    assert claims(fresh["access_token"])["auth_time"] == int(clock())
    assert claims(fresh["access_token"])["sid"] == claims(first["access_token"])["sid"]
    assert fresh["amr"] == ["pwd", "otp", "mfa"]

    # The link the caller held is spent: the family has one live link, the new one.
    old = client.post("/api/token/refresh", json={"refresh_token": first["refresh_token"]})
    assert old.status_code == 401
    # ...and presenting it counted as reuse: the whole login, new link included, is over.
    assert (
        client.post(
            "/api/token/refresh", json={"refresh_token": fresh["refresh_token"]}
        ).status_code
        == 401
    )
    ok = client.delete(f"/api/factors/{factor['id']}", headers=bearer(fresh["access_token"]))
    assert ok.status_code == 204


def test_a_step_up_refresh_token_continues_the_login(client, clock, settings):
    account = signup(client)
    factor = enroll_first_totp(client, account, clock)
    clock.advance(settings.step_up_max_age + 30)
    start = client.post("/api/step-up", headers=account.access).json()
    fresh = step_up_verify(client, start, factor, clock).json()
    r = client.post("/api/token/refresh", json={"refresh_token": fresh["refresh_token"]})
    assert r.status_code == 200
    assert claims(r.json()["access_token"])["auth_time"] == int(clock())
    # Logging out of the login ends the stepped-up tokens with it.
    client.post("/api/logout", json={"refresh_token": r.json()["refresh_token"]})
    assert client.post("/api/step-up", headers=bearer(r.json()["access_token"])).status_code == 401


def test_step_up_through_the_cookie_replaces_it(client, clock, settings):
    account = signup(client)
    factor = enroll_first_totp(client, account, clock)
    r = cookie_login(client, account, clock)
    access = r.json()["access_token"]
    before = client.cookies[COOKIE_NAME]
    clock.advance(settings.step_up_max_age + 30)
    start = client.post("/api/step-up", headers=bearer(access)).json()
    verified = step_up_verify(client, start, factor, clock, cookie=True)
    assert verified.status_code == 200, verified.text
    assert "refresh_token" not in verified.json()
    assert client.cookies[COOKIE_NAME] != before
    refreshed = client.post(f"{COOKIE_PATH}/refresh", headers={"Origin": ORIGIN})
    assert refreshed.status_code == 200
    assert claims(refreshed.json()["access_token"])["auth_time"] == int(clock())


def test_step_up_needs_an_access_token(client, clock):
    account = signup(client)
    enroll_first_totp(client, account, clock)
    assert client.post("/api/step-up").status_code == 401
    start = login(client, account)
    r = client.post("/api/step-up", headers=bearer(start["mfa_token"]))
    assert r.status_code == 401
    assert r.json()["error"] == "unauthorized"


def test_step_up_of_a_login_that_ended_is_refused(client, clock):
    account = signup(client)
    factor = enroll_first_totp(client, account, clock)
    start = client.post("/api/step-up", headers=account.access).json()
    # Logged out between the step-up's start and its answer: the answer cannot revive it.
    client.post("/api/logout", json={"refresh_token": account.tokens["refresh_token"]})
    clock.advance(30)
    r = step_up_verify(client, start, factor, clock)
    assert r.status_code == 401
    assert r.json()["error"] == "invalid_mfa_token"
    # And a new step-up with the still unexpired access token is refused outright.
    assert client.post("/api/step-up", headers=account.access).status_code == 401


def test_a_step_up_transaction_never_enrolls_a_factor(client, clock):
    account = signup(client)
    factor = enroll_first_totp(client, account, clock)
    start = client.post("/api/step-up", headers=account.access).json()
    # With no active factor left, a login's mfa_token may enroll one; a step-up's may not.
    assert client.delete(f"/api/factors/{factor['id']}", headers=account.access).status_code == 204
    r = client.post("/api/factors", json={"type": "totp"}, headers=bearer(start["mfa_token"]))
    assert r.status_code == 401


def test_openapi_lists_the_session_and_step_up_endpoints(client):
    paths = client.get("/openapi.json").json()["paths"]
    for path in (f"{COOKIE_PATH}/refresh", f"{COOKIE_PATH}/logout", "/api/step-up"):
        assert "post" in paths[path]
