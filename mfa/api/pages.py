"""The browser pages (``web/``): three HTML files and their static modules, from our own origin.

Everything is read once, when the app is made. Static files are served under
``/static/<version>/``, where the version is a digest of their contents, so they can be cached
for good (``immutable``) and a new release is fetched at once: the pages, which name the
version, are revalidated on every load (``no-cache`` with an ``ETag``). The modules import each
other by relative paths and so stay within one version. Only files known at start-up are ever
served, so no request path reaches the file system.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from starlette.requests import Request
from starlette.responses import Response

from ..errors import NotFound

WEB_DIR = Path(__file__).resolve().parent.parent.parent / "web"
STATIC_PREFIX = "/static"

# Route -> file. The routes are the pages' public addresses (README, tests, bookmarks).
PAGES = {"/": "index.html", "/signup": "signup.html", "/account": "account.html"}

# No inline script or style, nothing from elsewhere; QR codes arrive as data: images.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'; "
    "object-src 'none'"
)
SECURITY_HEADERS = {
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cross-Origin-Opener-Policy": "same-origin",
}
_PAGE_HEADERS = {
    **SECURITY_HEADERS,
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",  # for browsers that predate frame-ancestors
    "Cache-Control": "no-cache",
}
_STATIC_HEADERS = {**SECURITY_HEADERS, "Cache-Control": "public, max-age=31536000, immutable"}
_MEDIA_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
}


@dataclass(frozen=True)
class File:
    body: bytes
    media_type: str
    etag: str

    @classmethod
    def of(cls, body: bytes, media_type: str) -> File:
        return cls(body, media_type, '"' + hashlib.sha256(body).hexdigest()[:32] + '"')


@dataclass(frozen=True)
class Site:
    version: str
    pages: dict[str, File]
    assets: dict[str, File]

    @classmethod
    def load(cls, root: Path = WEB_DIR) -> Site:
        """Read ``root``; a missing directory gives a site with no pages (an API-only install)."""
        assets: dict[str, File] = {}
        static = root / "static"
        if static.is_dir():
            for path in sorted(static.rglob("*")):
                media_type = _MEDIA_TYPES.get(path.suffix)
                if path.is_file() and media_type is not None:
                    name = path.relative_to(static).as_posix()
                    assets[name] = File.of(path.read_bytes(), media_type)
        version = hashlib.sha256(
            b"".join(name.encode() + b"\0" + f.etag.encode() for name, f in assets.items())
        ).hexdigest()[:16]
        pages: dict[str, File] = {}
        for route, name in PAGES.items():
            if (root / name).is_file():
                html = (root / name).read_text("utf-8").replace("{{static}}", _base(version))
                pages[route] = File.of(html.encode(), "text/html; charset=utf-8")
        return cls(version=version, pages=pages, assets=assets)


def _base(version: str) -> str:
    return f"{STATIC_PREFIX}/{version}"


def _site(request: Request) -> Site:
    site: Site = request.app.state.site
    return site


def _send(request: Request, file: File, headers: dict[str, str]) -> Response:
    all_headers = {**headers, "ETag": file.etag}
    if request.headers.get("if-none-match") == file.etag:
        return Response(status_code=304, headers=all_headers)
    return Response(file.body, media_type=file.media_type, headers=all_headers)


async def page(request: Request) -> Response:
    file = _site(request).pages.get(request.url.path)
    if file is None:
        raise NotFound("No such page.")
    return _send(request, file, _PAGE_HEADERS)


async def static(request: Request) -> Response:
    site = _site(request)
    # An older version's file is not served as this one: it would be cached for good.
    if request.path_params["version"] != site.version:
        raise NotFound("No such file.")
    file = site.assets.get(request.path_params["path"])
    if file is None:
        raise NotFound("No such file.")
    return _send(request, file, _STATIC_HEADERS)
