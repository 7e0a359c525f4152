"""Serves the built single-page app at ``/ui``: hashed assets are cached forever, every other path gets
``index.html`` (the app routes itself), and a missing build gets a page that says how to make it."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response

STATIC_DIR = Path(__file__).resolve().parent / "static"

router = APIRouter(include_in_schema=False)

MISSING_BUILD = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>iollm web UI is not built</title></head>
<body style="font-family: system-ui, sans-serif; max-width: 40rem; margin: 4rem auto; line-height: 1.5">
<h1>The web UI has not been built</h1>
<p>This node serves its editor from <code>{static}</code>, which has no <code>index.html</code>.</p>
<p>Build it from the repository root with <code>make ui</code> (needs Node.js 20 and npm), then reload
this page. <code>make up</code> and <code>make test</code> build it too.</p>
<p>The node's APIs work without it: see <a href="/api/docs">/api/docs</a>.</p>
</body></html>
"""


def built() -> bool:
    return (STATIC_DIR / "index.html").is_file()


def _index() -> Response:
    if not built():
        return HTMLResponse(MISSING_BUILD.format(static=STATIC_DIR), status_code=503)
    return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})


@router.get("/ui")
def ui_root() -> Response:
    return RedirectResponse("/ui/", status_code=307)


@router.get("/ui/{path:path}")
def ui_file(path: str) -> Response:
    """A file of the build when one matches (never outside the build folder), else the app itself."""
    if path and built():
        candidate = (STATIC_DIR / path).resolve()
        if candidate.is_file() and candidate.is_relative_to(STATIC_DIR):
            immutable = path.startswith("assets/")  # Vite names these by content hash
            cache = "public, max-age=31536000, immutable" if immutable else "no-cache"
            return FileResponse(candidate, headers={"Cache-Control": cache})
        if path.startswith("assets/"):
            return Response("no such asset; rebuild the UI with `make ui`", status_code=404)
    return _index()
