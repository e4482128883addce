"""The pages in a real browser: Debian's Chromium driven by Playwright, against ``mfa serve``.

A person's journeys: sign up and enroll an authenticator app by scanning its QR code (read
from a screenshot, as a phone would), log out and in with a code, plug in a security key (a
virtual one, through the DevTools protocol) and log in with it. Every page a journey sees is
saved as a screenshot under ``test-artifacts/browser/<test>/``, at 360 px wide, and must fit
that width; no script error may reach the console.

One server on SQLite serves the module (the API the pages use is tested on both databases
elsewhere). Time is real: TOTP codes come from ``Authenticator``, which never reuses a step.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx2 as httpx
import pyotp
import pytest
import zxingcpp
from PIL import Image
from playwright.sync_api import Browser, Page, expect, sync_playwright

from .helpers import PASSWORD
from .live import serve

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORT = {"width": 360, "height": 780}
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "browser"
STEP_UP_MAX_AGE = 3  # seconds: short, so that one journey can outwait it
VIRTUAL_KEY = {
    "protocol": "ctap2",
    "transport": "usb",
    "hasResidentKey": True,
    "hasUserVerification": True,
    "isUserVerified": True,
    "automaticPresenceSimulation": True,
}
NO_WEBAUTHN = (
    "security keys (issue 3, factor type webauthn) are not on this branch: "
    "POST /api/factors with type webauthn answers 400"
)


@dataclass(frozen=True)
class Site:
    base: str
    database: Path


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    data = tmp_path_factory.mktemp("browser")
    env = {
        "MFA_DATA_DIR": str(data / "var"),
        "MFA_DATABASE_URL": f"sqlite:///{data / 'mfa.db'}",
        "MFA_STEP_UP_MAX_AGE": str(STEP_UP_MAX_AGE),
    }
    with serve(env, log=data / "server.log") as base:
        yield Site(base, data / "mfa.db")


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not os.path.exists(CHROMIUM):
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing; .ci/run installs it (apt-get install chromium)")
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium)")
    with sync_playwright() as p:
        # Debian's Chromium, not a Playwright download (none can be fetched here); Playwright
        # 1.65 expects a newer build but drives this one fine.
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def webauthn_supported(site: Site) -> bool:
    """Whether this server enrolls security keys: asked the way the pages ask."""
    name = f"probe{time.time_ns() % 10**9}"
    httpx.post(f"{site.base}/api/users", json={"username": name, "password": PASSWORD})
    start = httpx.post(
        f"{site.base}/api/login", json={"username": name, "password": PASSWORD}
    ).json()
    r = httpx.post(
        f"{site.base}/api/factors",
        json={"type": "webauthn", "label": "probe"},
        headers={"Authorization": f"Bearer {start['mfa_token']}"},
    )
    assert r.status_code in (201, 400), r.text
    return r.status_code == 201


class Authenticator:
    """An authenticator app holding one TOTP key: gives codes for time steps not used yet
    (the service accepts each step once, and one step either side of now)."""

    def __init__(self, uri: str) -> None:
        query = parse_qs(urlsplit(uri).query)
        self.secret = query["secret"][0]
        self.totp = pyotp.TOTP(self.secret, interval=int(query.get("period", ["30"])[0]))
        self.used = -1

    def code(self) -> str:
        now = int(time.time()) // self.totp.interval
        step = max(now, self.used + 1)
        if step > now + 1:  # both usable steps are spent: wait for the next one
            time.sleep((step - 1) * self.totp.interval - time.time() + 0.2)
        self.used = step
        return self.totp.at(step * self.totp.interval)

    def wrong(self) -> str:
        now = int(time.time()) // self.totp.interval
        window = {self.totp.at((now + d) * self.totp.interval) for d in (-1, 0, 1, 2)}
        return next(c for c in (f"{n:06d}" for n in range(10**6)) if c not in window)


@dataclass
class Journey:
    """One test's tab, with what it must never see, and its screenshots."""

    base: str
    page: Page
    folder: Path
    problems: list[str] = field(default_factory=list)
    shots: int = 0
    username: str = ""
    user_id: str = ""

    def go(self, path: str) -> None:
        self.page.goto(self.base + path)

    def shot(self, name: str) -> None:
        """Save the page as an artifact, and check that it fits the narrow screen."""
        self.page.wait_for_load_state()
        self.shots += 1
        self.page.screenshot(path=self.folder / f"{self.shots:02d}-{name}.png", full_page=True)
        width = self.page.evaluate("document.documentElement.scrollWidth")
        assert width <= VIEWPORT["width"], f"{name}: {width} px wide"

    def fill(self, label: str, value: str) -> None:
        self.page.get_by_label(label, exact=True).fill(value)

    def click(self, name: str) -> None:
        self.page.get_by_role("button", name=name, exact=True).click()

    def signed_in(self) -> None:
        expect(self.page.get_by_text("Signed in as")).to_have_text(f"Signed in as {self.username}")

    def at_login(self) -> None:
        expect(self.page.get_by_role("button", name="Log in", exact=True)).to_be_visible()
        assert urlsplit(self.page.url).path == "/"

    def password(self, button: str = "Log in") -> None:
        self.fill("Username", self.username)
        self.fill("Password", PASSWORD)
        self.click(button)

    def scan_qr(self) -> Authenticator:
        """Read the QR code off the screen as a phone would, and check the printed key."""
        image = self.page.get_by_role("img", name="QR code")
        expect(image).to_be_visible()
        image.scroll_into_view_if_needed()
        found = zxingcpp.read_barcodes(Image.open(io.BytesIO(self.page.screenshot())))
        uris = [b.text for b in found if b.text.startswith("otpauth://totp/")]
        assert len(uris) == 1, [b.text for b in found]
        app = Authenticator(uris[0])
        printed = self.page.locator(".secret-key").inner_text()
        assert printed.replace(" ", "") == app.secret
        assert f":{self.username}?" in uris[0]
        return app

    def answer(self, app: Authenticator) -> None:
        self.fill("Code", app.code())
        self.click("Verify")


@pytest.fixture
def journey(site: Site, browser: Browser, request: pytest.FixtureRequest) -> Iterator[Journey]:
    folder = ARTIFACTS / request.node.name
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    context = browser.new_context(viewport=VIEWPORT)
    context.set_default_timeout(10_000)
    page = context.new_page()
    j = Journey(base=site.base, page=page, folder=folder, username=f"u{time.time_ns() % 10**12}")

    def on_console(message: Any) -> None:
        # A 4xx answer is logged by Chromium as "Failed to load resource": that is the API
        # saying no (a wrong code, no session yet), which the page handles; anything else is not.
        if message.type == "error" and not re.match(
            r"Failed to load resource: the server responded with a status of 4\d\d", message.text
        ):
            j.problems.append(f"console: {message.text}")

    page.on("console", on_console)
    page.on("pageerror", lambda error: j.problems.append(f"page error: {error}"))
    page.on(
        "response",
        lambda r: r.status >= 500 and j.problems.append(f"{r.status} from {r.url}"),
    )
    yield j
    context.close()
    assert j.problems == []


def api_user(j: Journey) -> Authenticator:
    """Sign the journey's user up over the API, with an authenticator app as first factor."""
    base, credentials = j.base, {"username": j.username, "password": PASSWORD}
    created = httpx.post(f"{base}/api/users", json=credentials)
    assert created.status_code == 201
    j.user_id = created.json()["id"]
    start = httpx.post(f"{base}/api/login", json=credentials).json()
    mfa = {"Authorization": f"Bearer {start['mfa_token']}"}
    factor = httpx.post(f"{base}/api/factors", json={"type": "totp"}, headers=mfa).json()
    app = Authenticator(factor["otpauth_uri"])
    confirm = httpx.post(
        f"{base}/api/factors/{factor['id']}/confirm", json={"code": app.code()}, headers=mfa
    )
    assert confirm.status_code == 200, confirm.text
    return app


def virtual_key(j: Journey) -> tuple[Any, str]:
    """Plug a USB security key into this tab (the key belongs to the tab's DevTools session)."""
    cdp = j.page.context.new_cdp_session(j.page)
    cdp.send("WebAuthn.enable")
    added = cdp.send("WebAuthn.addVirtualAuthenticator", {"options": VIRTUAL_KEY})
    return cdp, added["authenticatorId"]


def sign_counts(cdp: Any, authenticator: str) -> list[int]:
    credentials = cdp.send("WebAuthn.getCredentials", {"authenticatorId": authenticator})
    return [c["signCount"] for c in credentials["credentials"]]


def sign_up_with_app(j: Journey) -> Authenticator:
    j.go("/signup")
    j.shot("signup")
    j.password("Sign up")
    j.click("Add authenticator app")
    app = j.scan_qr()
    j.shot("enroll-app")
    j.answer(app)
    j.signed_in()
    return app


def log_in_with_code(j: Journey, app: Authenticator) -> None:
    j.go("/")
    j.password()
    expect(j.page.get_by_role("heading", name="Second factor")).to_be_visible()
    # The factor enrolled first leads; factors made within one second may come either way.
    other = j.page.get_by_role("button", name="Use a code from an app or token")
    if other.count():
        other.click()
    expect(j.page.get_by_label("Code", exact=True)).to_be_focused()
    j.answer(app)
    j.signed_in()


def test_sign_up_enroll_an_app_by_its_qr_code_log_out_and_log_in_with_a_code(journey):
    j = journey
    app = sign_up_with_app(j)
    j.shot("account")
    factors = j.page.locator(".factor")
    expect(factors).to_have_count(1)
    expect(factors).to_contain_text("Authenticator app")
    expect(factors).to_contain_text("Last used")

    j.click("Log out")
    j.at_login()
    j.shot("logged-out")
    j.password()
    expect(j.page.get_by_label("Code", exact=True)).to_be_focused()
    j.shot("second-factor")
    j.answer(app)
    j.signed_in()
    j.shot("logged-in")


def test_a_wrong_code_shows_an_error_and_the_right_one_then_works(journey):
    j = journey
    app = sign_up_with_app(j)
    j.click("Log out")
    j.at_login()
    j.password()
    j.fill("Code", app.wrong())
    j.click("Verify")
    alert = j.page.get_by_role("alert")
    expect(alert).to_have_text("That code was not accepted. Check it and try again.")
    j.shot("wrong-code")
    j.answer(app)
    j.signed_in()


def test_a_reload_keeps_the_session_and_logout_ends_it(journey):
    j = journey
    sign_up_with_app(j)
    j.page.reload()
    j.signed_in()
    j.shot("reloaded")
    # The session lives in an HttpOnly cookie only the session endpoints see; nothing in
    # storage a script could read.
    cookies = j.page.context.cookies()
    assert [(c["name"], c["path"], c["httpOnly"], c["sameSite"]) for c in cookies] == [
        ("mfa_refresh", "/api/session", True, "Strict")
    ]
    stored = j.page.evaluate("localStorage.length + sessionStorage.length")
    assert stored == 0
    assert j.page.evaluate("document.cookie") == ""

    j.click("Log out")
    j.at_login()
    assert j.page.context.cookies() == []
    j.go("/account")
    j.at_login()
    j.page.reload()
    j.at_login()
    j.shot("after-logout")


def test_too_many_wrong_codes_say_how_long_to_wait(journey):
    j = journey
    app = sign_up_with_app(j)
    j.click("Log out")
    j.at_login()
    j.password()
    alert = j.page.get_by_role("alert")
    for _ in range(5):  # a login transaction takes 5 wrong answers, and so does the throttle
        j.fill("Code", app.wrong())
        j.click("Verify")
        expect(alert).to_have_text(re.compile("not accepted"))
    j.fill("Code", app.wrong())
    j.click("Verify")
    expect(alert).to_have_text("This login has expired or ended. Please log in again.")
    j.shot("login-ended")
    j.password()
    j.answer(app)  # even a right code waits out the back-off, unchecked
    expect(alert).to_have_text(
        re.compile(r"^Too many failed attempts\. Wait (2\d|30) seconds before trying again\.$")
    )
    expect(j.page.get_by_role("button", name="Verify")).to_be_disabled()
    j.shot("throttled")


def test_removing_a_factor_after_the_step_up_window_asks_for_a_fresh_second_factor(journey):
    j = journey
    first = sign_up_with_app(j)
    j.fill("Name (optional)", "backup phone")
    j.click("Add authenticator app")
    second = j.scan_qr()
    j.answer(second)
    expect(j.page.get_by_role("status")).to_have_text("backup phone added.")
    expect(j.page.locator(".factor")).to_have_count(2)
    j.shot("two-apps")

    time.sleep(STEP_UP_MAX_AGE + 1)
    j.click("Remove backup phone")
    j.click("Yes, remove")
    dialog = j.page.get_by_role("dialog", name=re.compile(r"^Confirm it\u2019s you$"))
    expect(dialog).to_be_visible()
    j.shot("step-up")
    dialog.get_by_label("App or token").select_option(label="Authenticator app")
    j.answer(first)
    expect(dialog).to_be_hidden()
    expect(j.page.get_by_role("status")).to_have_text("Removed backup phone.")
    expect(j.page.locator(".factor")).to_have_count(1)
    j.shot("removed")
    # The step-up replaced the session cookie: a reload still finds the session.
    j.page.reload()
    j.signed_in()


def test_keyboard_alone_logs_in_and_out(journey):
    j = journey
    app = api_user(j)
    j.go("/")
    keys = j.page.keyboard
    keys.press("Tab")
    expect(j.page.get_by_label("Username")).to_be_focused()
    keys.type(j.username)
    keys.press("Tab")
    keys.type(PASSWORD)
    keys.press("Enter")
    expect(j.page.get_by_label("Code", exact=True)).to_be_focused()
    keys.type(app.code())
    keys.press("Enter")
    j.signed_in()
    for _ in range(10):
        keys.press("Tab")
        if j.page.evaluate("document.activeElement.textContent") == "Log out":
            break
    expect(j.page.get_by_role("button", name="Log out")).to_be_focused()
    keys.press("Enter")
    j.at_login()


def test_add_a_security_key_and_log_in_with_it(journey, webauthn_supported):
    if not webauthn_supported:
        pytest.skip(NO_WEBAUTHN)
    j = journey
    app = sign_up_with_app(j)
    cdp, key = virtual_key(j)
    j.fill("Name (optional)", "blue key")
    j.click("Add security key")
    expect(j.page.get_by_role("status")).to_have_text("blue key added.")
    expect(j.page.locator(".factor", has_text="blue key")).to_contain_text("Security key")
    j.shot("key-added")
    registered = sign_counts(cdp, key)
    assert len(registered) == 1

    # The same key again is refused by the browser (the service lists it as excluded).
    j.click("Add security key")
    expect(j.page.get_by_role("alert")).to_have_text(
        "This security key is already registered to your account."
    )
    expect(j.page.locator(".factor")).to_have_count(2)

    j.click("Log out")
    j.at_login()
    j.password()
    expect(j.page.get_by_role("heading", name="Second factor")).to_be_visible()
    j.shot("second-factor-choices")
    j.click("Use security key")
    j.signed_in()
    j.shot("logged-in-with-key")
    assert sign_counts(cdp, key)[0] > registered[0]  # the key signed: its counter moved
    expect(j.page.locator(".factor", has_text="blue key")).not_to_contain_text("never")

    # A second login with the key moves the counter again; the app still works too.
    j.click("Log out")
    j.at_login()
    log_in_with_code(j, app)


def test_a_first_factor_can_be_a_security_key(journey, webauthn_supported):
    if not webauthn_supported:
        pytest.skip(NO_WEBAUTHN)
    j = journey
    virtual_key(j)
    j.go("/signup")
    j.password("Sign up")
    j.click("Add security key")
    j.signed_in()
    expect(j.page.locator(".factor")).to_contain_text("Security key")
    j.shot("account")
    j.click("Log out")
    j.at_login()
    j.password()
    # The only factor is the key: its button leads, and nothing else is offered.
    expect(j.page.get_by_role("button", name="Use security key")).to_be_focused()
    j.click("Use security key")
    j.signed_in()


def test_a_key_the_account_does_not_know_gets_an_error(journey, webauthn_supported):
    if not webauthn_supported:
        pytest.skip(NO_WEBAUTHN)
    j = journey
    cdp, key = virtual_key(j)
    j.go("/signup")
    j.password("Sign up")
    j.click("Add security key")
    j.signed_in()
    j.click("Log out")
    j.at_login()
    # The key loses its credential: to the service it is now a stranger's key.
    cdp.send("WebAuthn.clearCredentials", {"authenticatorId": key})
    j.password()
    j.click("Use security key")
    expect(j.page.get_by_role("alert")).to_have_text(
        "No security key answered: the prompt was cancelled or timed out, "
        "or this key is not registered to your account."
    )
    j.shot("unknown-key")
    assert urlsplit(j.page.url).path == "/"


def test_a_locked_account_is_told_to_ask_an_administrator(journey, site):
    j = journey
    app = api_user(j)
    # 100 failures in a row lock a user's second factors; reaching that through the back-off
    # takes hours, so the lock is set where the service keeps it (tests/test_throttle.py
    # covers how it gets there).
    with sqlite3.connect(site.database) as db:
        db.execute(
            "INSERT INTO throttles (key, failures, blocked_until, locked) VALUES (?, 100, 0, 1)"
            " ON CONFLICT (key) DO UPDATE SET failures = 100, locked = 1",
            (f"mfa:{j.user_id}",),
        )
    j.go("/")
    j.password()
    j.fill("Code", app.wrong())  # right or wrong, a locked user's code is not even checked
    j.click("Verify")
    expect(j.page.get_by_role("alert")).to_have_text(
        "Your second factors are locked after too many failed attempts. "
        "Ask an administrator to unlock them."
    )
    j.shot("locked")


def test_refreshes_take_turns_so_a_session_survives_many_tabs(journey):
    j = journey
    sign_up_with_app(j)
    # Three refreshes at once, as three tabs loading together would send them: each spends
    # the cookie's token, so without taking turns the second would present a spent token and
    # end the whole login as a suspected theft.
    outcomes = j.page.evaluate(
        """async () => {
            const here = document.querySelector("script[type=module]").src;
            const api = await import(new URL("api.js", here).href);
            const all = await Promise.allSettled([api.resume(), api.resume(), api.resume()]);
            return all.map((o) => o.status);
        }"""
    )
    assert outcomes == ["fulfilled"] * 3
    j.page.reload()
    j.signed_in()
