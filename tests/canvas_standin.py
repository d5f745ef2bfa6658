"""A small stand-in for the Canvas REST endpoints that canvasapi calls for `grader import canvas
--canvas` and `grader push canvas`, served on 127.0.0.1, recording each request.

It answers as Canvas's API documents (https://canvas.instructure.com/doc/api/): the course and
the assignment as JSON objects; the submissions as a JSON list split in pages of two, the next
page named in a ``Link: <...>; rel="next"`` header (as Canvas paginates), each submission with
``user_id``, ``score``, ``submitted_at`` (UTC, ``Z``), ``late``, ``attachments`` and, when asked
with ``include[]``, ``submission_history`` and ``user``; a ``PUT`` of a submission reads the form
fields ``submission[posted_grade]`` and ``comment[text_comment]``, sets the score and returns the
submission. ``fail_after`` makes every PUT past that many answer 500, as a Canvas that stops
part-way. A request without ``Authorization: Bearer <token>`` is refused with 401.
"""

from __future__ import annotations

import json
import threading
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

TOKEN = "stand-in-token"
PAGE = 2


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    form: dict[str, list[str]]


@dataclass
class State:
    course_id: int = 1234
    assignments: dict[int, dict[str, Any]] = field(default_factory=dict)
    submissions: dict[int, dict[str, dict[str, Any]]] = field(default_factory=dict)  # by user id
    requests: list[Request] = field(default_factory=list)
    fail_after: int | None = None

    def puts(self) -> list[Request]:
        return [r for r in self.requests if r.method == "PUT"]


class CanvasStandIn:
    """The server; ``state`` is what it holds and what it was asked."""

    def __init__(self) -> None:
        self.state = State()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:  # quiet
                pass

            def do_GET(self) -> None:
                server._answer(self, "GET")

            def do_PUT(self) -> None:
                server._answer(self, "PUT")

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)

    def reset(self, state: State) -> None:
        self.state = state

    def _answer(self, h: BaseHTTPRequestHandler, method: str) -> None:
        parts = urllib.parse.urlsplit(h.path)
        length = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(length).decode("utf-8") if length else ""
        request = Request(method, parts.path, urllib.parse.parse_qs(parts.query),
                          urllib.parse.parse_qs(body))
        self.state.requests.append(request)
        if h.headers.get("Authorization") != f"Bearer {TOKEN}":
            return self._send(h, 401, {"errors": [{"message": "Invalid access token."}]})
        status, payload, headers = self._route(request)
        self._send(h, status, payload, headers)

    def _route(self, r: Request) -> tuple[int, Any, dict[str, str]]:
        s = self.state
        p = r.path.removeprefix("/api/v1/").strip("/").split("/")
        if len(p) < 2 or p[0] != "courses" or p[1] != str(s.course_id):
            return 404, {"errors": [{"message": "The specified resource does not exist."}]}, {}
        if len(p) == 2:
            return 200, {"id": s.course_id, "name": "NNSC"}, {}
        assignment = s.assignments.get(int(p[3])) if len(p) >= 4 and p[3].isdigit() else None
        if p[2] != "assignments" or assignment is None:
            return 404, {"errors": [{"message": "The specified resource does not exist."}]}, {}
        if len(p) == 4:
            return 200, assignment, {}
        subs = s.submissions[assignment["id"]]
        if len(p) == 5 and p[4] == "submissions" and r.method == "GET":
            return self._page(r, assignment["id"], list(subs.values()))
        if len(p) == 6 and p[4] == "submissions" and r.method == "PUT" and p[5] in subs:
            if s.fail_after is not None and len(s.puts()) > s.fail_after:
                return 500, {"errors": [{"message": "An error occurred."}]}, {}
            sub = subs[p[5]]
            grade = r.form.get("submission[posted_grade]", [None])[0]
            if grade is not None:
                sub["score"] = float(grade)
                sub["grade"] = grade
            comment = r.form.get("comment[text_comment]", [None])[0]
            if comment is not None:
                sub.setdefault("submission_comments", []).append({"comment": comment})
            return 200, self._public(sub, ()), {}
        return 404, {"errors": [{"message": "The specified resource does not exist."}]}, {}

    def _page(self, r: Request, assignment_id: int, subs: list[dict[str, Any]]
              ) -> tuple[int, Any, dict[str, str]]:
        page = int(r.query.get("page", ["1"])[0])
        include = r.query.get("include[]", [])
        chunk = subs[(page - 1) * PAGE:page * PAGE]
        headers = {}
        if page * PAGE < len(subs):
            query = urllib.parse.urlencode({"page": page + 1, "per_page": PAGE}
                                           | {"include[]": include}, doseq=True)
            headers["Link"] = (f'<{self.url}/api/v1/courses/{self.state.course_id}/assignments/'
                               f'{assignment_id}/submissions?{query}>; rel="next"')
        return 200, [self._public(s, include) for s in chunk], headers

    @staticmethod
    def _public(sub: dict[str, Any], include: tuple[str, ...] | list[str]) -> dict[str, Any]:
        shown = {k: v for k, v in sub.items() if k not in ("submission_history", "user")}
        for key in include:
            if key in sub:
                shown[key] = sub[key]
        return shown

    @staticmethod
    def _send(h: BaseHTTPRequestHandler, status: int, payload: Any,
              headers: dict[str, str] | None = None) -> None:
        data = json.dumps(payload).encode("utf-8")
        h.send_response(status)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            h.send_header(key, value)
        h.end_headers()
        h.wfile.write(data)
