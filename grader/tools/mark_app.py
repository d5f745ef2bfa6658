"""``grader mark``: a small web application where people mark written answers with rubrics.

Flask, pages rendered on the server from the jinja2 templates of ``grader/output/templates``
(the environment that escapes everything: a student's text, HTML or ``{{ }}`` included, is
shown as text), one short script of our own (number keys toggle rubric items), no build step.

Security: every request needs the random token of the URL that ``grader mark`` prints (as
Jupyter does); the first request with it opens a session (a signed cookie, HttpOnly,
SameSite=Strict) and is redirected to the same page without it. Form posts carry the session's
CSRF token (Flask-WTF). Pages forbid scripts but their own (a Content-Security-Policy with a
nonce), framing and referrers; figures are PNGs checked when they were read, shown as images.
On the loopback address (the default) a request naming another host is refused, so a web page
elsewhere cannot reach the server by DNS rebinding.

Several markers at once: each is asked their name once (kept in their session and with every
mark); "next" gives each an answer no one else has open; a save based on an out-of-date mark
is refused with a message and the marker's choices kept on the page (and in the log).
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from flask import Flask, Response, abort, g, redirect, request, session
from flask.typing import ResponseReturnValue
from flask_wtf.csrf import CSRFError, CSRFProtect, generate_csrf

from grader.course.config import Course
from grader.errors import GraderError, MarkingError, StaleMark
from grader.output.pages import render
from grader.pipeline import written
from grader.pipeline.store import Gradebook, open_gradebook
from grader.text import LINE_CHARS, clip
from grader.tools import marking
from grader.tools.marking import Entry

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


def entry_id(entry: Entry) -> str:
    """An answer's id in the page's addresses: it names neither the student nor the text."""
    return hashlib.sha256(f"{entry.student}/{entry.answer.sha256}".encode()).hexdigest()[:20]


def create_app(course: Course, gradebook: Path, token: str, loopback: bool = True) -> Flask:
    """The marking application for ``course`` and the gradebook at ``gradebook``; requests
    must carry ``token`` (or a session opened with it). ``loopback``: served on a loopback
    address only, so a request naming another host is refused."""
    app = Flask(__name__)
    app.config.update(SECRET_KEY=secrets.token_bytes(32),
                      SESSION_COOKIE_NAME=f"grader-mark-{secrets.token_hex(4)}",
                      SESSION_COOKIE_HTTPONLY=True, SESSION_COOKIE_SAMESITE="Strict",
                      WTF_CSRF_TIME_LIMIT=None,  # one token per session: no save lost to age
                      MAX_CONTENT_LENGTH=256_000)

    @app.before_request
    def _guard() -> ResponseReturnValue | None:
        if loopback and not is_loopback(urlsplit(f"//{request.host}").hostname or ""):
            abort(403, "this server answers only to its loopback address")
        given = request.args.get("token")
        if given is not None and secrets.compare_digest(given, token):
            session.clear()
            session["auth"] = True
            return redirect(request.path)
        if not session.get("auth"):
            abort(403, "open the address that `grader mark` printed, with its token")
        g.nonce = secrets.token_urlsafe(16)
        return None

    CSRFProtect(app)  # after the token's guard: a request without the token is refused first

    @app.after_request
    def _headers(response: Response) -> Response:
        nonce = g.get("nonce", "none")
        response.headers["Content-Security-Policy"] = (
            f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'unsafe-inline'; "
            "img-src data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["Cache-Control"] = "no-store"
        return response

    @contextmanager
    def book() -> Iterator[Gradebook]:
        with open_gradebook(gradebook) as opened:
            yield opened

    def page(template: str, status: int = 200, **context: Any) -> tuple[str, int]:
        return render(template, nonce=g.get("nonce", ""), csrf=generate_csrf(), here=request.path,
                      marker=session.get("marker", ""), show_names=session.get("names", False),
                      course=course, **context), status

    @app.errorhandler(403)
    @app.errorhandler(404)
    @app.errorhandler(400)
    def _refused(error: Any) -> tuple[str, int]:
        return render("mark_message.html.j2", nonce="", title=f"{error.code}: refused"
                      if error.code == 403 else f"{error.code}", message=error.description,
                      back=False), error.code

    @app.errorhandler(CSRFError)
    def _csrf(error: CSRFError) -> tuple[str, int]:
        return page("mark_message.html.j2", 400, title="Not saved", back=True,
                    message=f"The form did not carry this session's token ({error.description})"
                            f"; nothing was saved. Go back, reload the page, and save again.")

    @app.errorhandler(GraderError)
    def _grader_error(error: GraderError) -> tuple[str, int]:
        return page("mark_message.html.j2", 400, title="Not saved", message=str(error),
                    back=True)

    @app.get("/")
    def index() -> tuple[str, int]:
        with book() as b:
            rows = marking.scored_rows(b, course)
            homeworks = [(hw, [marking.progress(marking.queue(b, course, hw, q.id, rows), q)
                               for q in questions])
                         for hw, questions in marking.all_questions(course).items()]
        return page("mark_index.html.j2", homeworks=homeworks)

    @app.post("/marker")
    def set_marker() -> ResponseReturnValue:
        name = clip(request.form.get("marker", "").strip(), LINE_CHARS)
        if name:
            session["marker"] = name
        return redirect(_local(request.form.get("next")))

    @app.post("/names")
    def toggle_names() -> ResponseReturnValue:
        session["names"] = not session.get("names", False)
        return redirect(_local(request.form.get("next")))

    def need_marker() -> ResponseReturnValue | None:
        return None if session.get("marker") else redirect("/")

    def find(b: Gradebook, hw: str, qid: str, wanted: str) -> tuple[list[Entry], Entry]:
        entries = marking.queue(b, course, hw, qid)
        for entry in entries:
            if entry_id(entry) == wanted:
                return entries, entry
        abort(404, "no such answer (a resubmission may have replaced it): go back to the "
                   "question")

    @app.get("/q/<hw>/<qid>")
    def question_page(hw: str, qid: str) -> tuple[str, int]:
        q = marking.question(course, hw, qid)
        with book() as b:
            entries = marking.queue(b, course, hw, qid)
        return page("mark_question.html.j2", hw=hw, q=q, entries=entries, ids=entry_id,
                    progress=marking.progress(entries, q), notice=request.args.get("notice"))

    @app.get("/q/<hw>/<qid>/next")
    def next_answer(hw: str, qid: str) -> ResponseReturnValue:
        if (missing := need_marker()) is not None:
            return missing
        marking.question(course, hw, qid)
        with book() as b:
            entries = marking.queue(b, course, hw, qid)
            key = written.claim_next(b, [e.key for e in entries if e.to_mark],
                                     session["marker"], time.time())
        if key is None:
            return redirect(f"/q/{hw}/{qid}?notice=done")
        entry = next(e for e in entries if e.key == key)
        return redirect(f"/q/{hw}/{qid}/a/{entry_id(entry)}")

    def answer_page(hw: str, qid: str, entries: list[Entry], entry: Entry, status: int = 200,
                    **extra: Any) -> tuple[str, int]:
        q = marking.question(course, hw, qid)
        with book() as b:
            full = written.answer(b, entry.key)
        figure = None if full is None or full.figure is None else \
            base64.b64encode(full.figure).decode("ascii")
        chosen = extra.pop("chosen", entry.mark.items if entry.mark else ())
        comment = extra.pop("comment", entry.mark.comment if entry.mark else "")
        points = extra.pop("points", entry.mark.points if entry.mark else None)
        return page("mark_answer.html.j2", status, hw=hw, q=q, entry=entry, figure=figure,
                    progress=marking.progress(entries, q), chosen=chosen, comment=comment,
                    points=points, version=entry.mark.version if entry.mark else 0,
                    answer_id=entry_id(entry), **extra)

    @app.get("/q/<hw>/<qid>/a/<aid>")
    def show_answer(hw: str, qid: str, aid: str) -> ResponseReturnValue:
        if (missing := need_marker()) is not None:
            return missing
        with book() as b:
            entries, entry = find(b, hw, qid, aid)
        return answer_page(hw, qid, entries, entry)

    @app.post("/q/<hw>/<qid>/a/<aid>")
    def save_answer(hw: str, qid: str, aid: str) -> ResponseReturnValue:
        if (missing := need_marker()) is not None:
            return missing
        items = tuple(request.form.getlist("item"))
        comment = request.form.get("comment", "")
        text = request.form.get("points", "").strip()
        try:
            points = float(text) if text else None
        except ValueError:
            points = None
            text = f"not a number: {text!r}"
        version = request.form.get("version", "0")
        with book() as b:
            entries, entry = find(b, hw, qid, aid)
            try:
                if points is None and text:
                    raise MarkingError(f"points: {text}")
                if not version.isdigit():
                    raise MarkingError(f"the form's version is not a number: {version!r}")
                marking.mark_answer(b, course, entry.key, items, points, comment,
                                    session["marker"], int(version))
            except StaleMark as stale:
                entries, entry = find(b, hw, qid, aid)
                return answer_page(hw, qid, entries, entry, 409, error=str(stale),
                                   chosen=items, comment=comment, points=points,
                                   theirs=stale.current)
            except MarkingError as exc:
                return answer_page(hw, qid, entries, entry, 400, error=str(exc),
                                   chosen=items, comment=comment, points=points)
        return redirect(f"/q/{hw}/{qid}/next")

    @app.post("/q/<hw>/<qid>/item/<item>")
    def edit_item(hw: str, qid: str, item: str) -> ResponseReturnValue:
        if (missing := need_marker()) is not None:
            return missing
        try:
            seen, new = float(request.form["seen"]), float(request.form["points"])
        except (KeyError, ValueError):
            raise MarkingError(f"{hw} {qid} {item}: points must be a number") from None
        with book() as b:
            marking.set_item_points(b, course, hw, qid, item, seen, new, session["marker"])
        return redirect(f"/q/{hw}/{qid}?notice=rubric")

    return app


def serve(app: Flask, host: str, port: int) -> Any:
    """A threaded WSGI server for ``app`` on ``host``:``port`` (0: a free port), not started:
    call its ``serve_forever()``; ``server_port`` is the port it got."""
    from werkzeug.serving import make_server

    return make_server(host, port, app, threaded=True)


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address, no port) is this machine's loopback."""
    return host in LOOPBACK_HOSTS or host.startswith("127.")


def _local(target: str | None) -> str:
    # a page of this server only: never another site's address (an open redirect)
    return target if target and target.startswith("/") and not target.startswith("//") \
        and "\\" not in target else "/"
