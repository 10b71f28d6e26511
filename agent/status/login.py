"""The login form: how a browser gets a session without a password in its address bar.

GET /login (and any unauthenticated GET /) shows the form, with a CSRF token in
a hidden field and in a SameSite=Strict cookie. POST /login must carry both, and
equal, so another site cannot log a browser in behind its user's back. A right
password opens a session cookie and sends the browser on to the page; a wrong
one shows the form again, and the client's wrong logins make it wait
(`LoginThrottle`). Answers about logins are never cached.
"""

from __future__ import annotations

import hmac
import secrets
from html import escape
from http.cookies import SimpleCookie
from urllib.parse import parse_qsl, urlsplit

from ..httpserve import HttpError, Request, Response
from .auth import SESSION_COOKIE, SESSION_SECONDS, Gate

CSRF_COOKIE = "floorlink_csrf"
CSRF_SECONDS = 3600  # a form left open longer asks again
MAX_FORM = 4096  # a user name, a password and a token
NO_STORE = [("Cache-Control", "no-store")]

_STYLE = """
body{font:16px/1.4 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;
 background:#f6f7f9;color:#202124}
main{max-width:360px;margin:12vh auto;padding:20px;background:#fff;
 border:1px solid #dadce0;border-radius:8px}
h1{font-size:20px;margin:0 0 12px} label{display:block;margin:10px 0 4px}
input{width:100%;font:inherit;padding:8px;box-sizing:border-box}
button{margin-top:16px;width:100%;font:inherit;padding:10px}
p.error{color:#b3261e;font-weight:600}
"""


def login_form(message: str = "", status: int = 401) -> Response:
    """The form, with a fresh CSRF token in a hidden field and in a cookie."""
    token = secrets.token_urlsafe(24)
    shown = f"<p class=error>{escape(message)}</p>" if message else ""
    page = (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        '<meta name=viewport content="width=device-width,initial-scale=1">'
        f"<title>floorlink: log in</title><style>{_STYLE}</style></head><body><main>"
        f"<h1>floorlink status</h1>{shown}"
        '<form method=post action="/login">'
        f'<input type=hidden name=csrf value="{token}">'
        '<label for=user>User</label>'
        '<input id=user name=user autocomplete=username required autofocus>'
        '<label for=password>Password</label>'
        '<input id=password name=password type=password autocomplete=current-password '
        'required>'
        "<button type=submit>Log in</button></form></main></body></html>")
    return Response.text(page, status, content_type="text/html; charset=utf-8",
                         headers=[*NO_STORE, ("Set-Cookie", cookie(CSRF_COOKIE, token,
                                                                    CSRF_SECONDS))])


async def log_in(request: Request, gate: Gate) -> Response:
    """POST /login: a session and a redirect to the page, or the form again."""
    form = posted_form(request, MAX_FORM, "/login")
    expected = request.cookie(CSRF_COOKIE)
    given = form.get("csrf", "")
    if not expected or not hmac.compare_digest(expected.encode(), given.encode()):
        return login_form("The form had expired; please log in again.", 403)
    wait = gate.throttle.wait_left(request.remote)
    if wait > 0:
        response = login_form(f"Too many wrong logins from here: try again in "
                              f"{wait:.0f} s.", 429)
        response.headers.append(("Retry-After", str(max(1, round(wait)))))
        return response
    if not gate.password_ok(form.get("user", ""), form.get("password", "")):
        gate.throttle.failed(request.remote)
        return login_form("Wrong user or password.", 401)
    gate.throttle.succeeded(request.remote)
    return Response.text("logged in\n", 303, headers=[
        *NO_STORE, ("Location", "/"),
        ("Set-Cookie", cookie(SESSION_COOKIE, gate.open_session(), SESSION_SECONDS)),
        ("Set-Cookie", cookie(CSRF_COOKIE, "", 0))])


def posted_form(request: Request, limit: int, page: str) -> dict[str, str]:
    """The fields of a form posted from `page` of this server: HttpError when it is over
    `limit` bytes, comes from another site, or is not a form."""
    if len(request.body) > limit:
        raise HttpError(413, f"a form of {page} is under {limit} bytes\n", headers=NO_STORE)
    if not same_origin(request):
        raise HttpError(403, f"this form is posted from {page} itself, not from another "
                             "site\n", headers=NO_STORE)
    try:
        return dict(parse_qsl(request.body.decode("utf-8"), max_num_fields=10))
    except (UnicodeDecodeError, ValueError) as exc:
        raise HttpError(400, f"the form did not arrive whole: open {page} again\n",
                        headers=NO_STORE) from exc


def same_origin(request: Request) -> bool:
    """A browser names the page a form came from; it must be this server. (A client that
    names none, such as curl, is let through: CSRF needs a browser.)"""
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        return origin is None
    return urlsplit(origin).netloc == request.headers.get("host", "")


def cookie(name: str, value: str, seconds: int, path: str = "/") -> str:
    """A Set-Cookie value: HttpOnly, SameSite=Strict (another site's form or link never
    carries it), for `path` and below."""
    jar: SimpleCookie = SimpleCookie()
    jar[name] = value
    morsel = jar[name]
    morsel["max-age"] = str(seconds)
    morsel["httponly"] = True
    morsel["samesite"] = "Strict"
    morsel["path"] = path
    return morsel.OutputString()
