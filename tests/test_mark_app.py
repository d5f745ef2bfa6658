"""`grader mark` in a real browser: the marking page of the tiny homework's written questions
(tests/written_course.py), served on a free port of the loopback address in this process and
driven by Debian's headless Chromium through Debian's chromedriver (Selenium).

One server and one browser for the module (their start costs seconds); the tests run in order
on the same gradebook, as markers would: three answers marked by keyboard and click, a rubric
item edited and every score that used it changed, two markers at once (a second window on
`localhost` rather than `127.0.0.1`: another site to the browser, so another cookie jar and
another session), a hostile answer shown as text, and then the CSV and the feedback carry the
marks. Requests without the token (or with a wrong one, another host, a post without the
session's CSRF token) are sent without a browser.

`GRADER_SCREENSHOT=shot.png` saves the tiny course's marking page (docs/marking.png is
homework 1's, on `make demo`'s gradebook).
"""

from __future__ import annotations

import http.cookiejar
import json
import os
import shutil
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from written_course import HOSTILE, class_submissions, gradebook, write_course

from grader.cli.main import main
from grader.course.config import Course
from grader.pipeline import written
from grader.pipeline.store import open_gradebook
from grader.tools.mark_app import create_app, serve

TOKEN = "test-token-" + "x" * 20
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--window-size=1280,1000")


@dataclass(frozen=True)
class Site:
    course: Course
    gradebook: Path
    port: int
    root: Path

    def url(self, path: str = "/", host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    root = tmp_path_factory.mktemp("marking")
    course = write_course(root)
    book = gradebook(course, root / "gradebook.sqlite", class_submissions(course, root / "subs"))
    server = serve(create_app(course, book, TOKEN), "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield Site(course, book, server.server_port, root)
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    if not (shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER)):
        if os.environ.get("CI"):
            pytest.fail("chromium and chromium-driver are not installed; .ci/run installs them")
        pytest.skip("chromium or chromedriver missing (apt-get install chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.implicitly_wait(0)
    yield driver
    driver.quit()


def _marks(site: Site) -> dict[tuple[str, str], written.Mark]:
    with open_gradebook(site.gradebook) as book:
        return {(m.student, m.question): m for m in written.marks(book).values()}


def _sign_in(driver: WebDriver, site: Site, name: str, host: str = "127.0.0.1") -> None:
    driver.get(site.url(f"/?token={TOKEN}", host))
    assert "?token" not in driver.current_url  # the token leaves the address bar
    driver.find_element(By.ID, "marker").send_keys(name)
    _loads_a_page(driver, driver.find_element(By.ID, "start").click)
    assert name in driver.find_element(By.CLASS_NAME, "who").text


def _student_on_page(driver: WebDriver, site: Site) -> str:
    """Whose answer the page shows (the pseudonym, looked up in the queue)."""
    from grader.tools.marking import pseudonym

    shown = driver.find_element(By.ID, "who").text
    return next(s for s in ("alice", "bob", "carol", "dave", "erin")
                if pseudonym("hw1", s) == shown or s == shown)


def _press(driver: WebDriver, keys: str) -> None:
    driver.find_element(By.TAG_NAME, "body").send_keys(keys)


def _loads_a_page(driver: WebDriver, action: Callable[[], object]) -> None:
    """Do ``action`` (a click or a key that submits a form) and wait until the next page is
    there: the old page's elements go stale the moment it is replaced. While the old document
    is torn down, chromedriver may answer a question about it with another error ("unhandled
    inspector error", seen under load in a second window): that is asked again, not a failure."""
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    old = driver.find_element(By.TAG_NAME, "html")
    action()
    WebDriverWait(driver, 60, ignored_exceptions=(WebDriverException,)).until(
        expected_conditions.staleness_of(old))


# -- the token, the host, the CSRF token -------------------------------------------------------


def _status(request: urllib.request.Request | str,
            opener: urllib.request.OpenerDirector | None = None) -> tuple[int, str]:
    try:
        with (opener or urllib.request.build_opener()).open(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_a_request_without_the_token_is_refused(site: Site) -> None:
    for path in ("/", "/q/hw1/roofline", "/q/hw1/roofline/next", "/?token=wrong"):
        code, body = _status(site.url(path))
        assert code == 403, path
        assert "token" in body
    code, _ = _status(urllib.request.Request(site.url("/marker"), data=b"marker=x"))
    assert code == 403
    # the token, but another host name (a page elsewhere rebinding its name to 127.0.0.1)
    code, _ = _status(urllib.request.Request(site.url(f"/?token={TOKEN}"),
                                             headers={"Host": f"evil.example:{site.port}"}))
    assert code == 403


def test_a_post_without_the_sessions_csrf_token_stores_nothing(site: Site) -> None:
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    code, _ = _status(site.url(f"/?token={TOKEN}"), opener)
    assert code == 200 and len(jar) == 1  # the session is open
    form = urllib.parse.urlencode({"marker": "mallory"}).encode()
    code, body = _status(urllib.request.Request(site.url("/marker"), data=form), opener)
    assert code == 400 and "nothing was saved" in body
    code, body = _status(site.url("/"), opener)
    assert "Not signed in" in body  # the name was not taken
    assert "mallory" not in body


# -- marking in the browser ----------------------------------------------------------------------


def test_mark_three_answers_by_keyboard_and_click(site: Site, browser: WebDriver) -> None:
    _sign_in(browser, site, "Ann")
    _loads_a_page(browser, browser.find_element(
        By.CSS_SELECTOR, "#progress-hw1-roofline a.mark-next").click)
    done: dict[str, tuple[str, ...]] = {}

    # 1: by keyboard alone: items 1 and 2, Enter saves and opens the next answer
    first = _student_on_page(browser, site)
    assert browser.find_element(By.ID, "figure").get_attribute("src").startswith(
        "data:image/png;base64,")
    _press(browser, "12")
    assert browser.find_element(By.ID, "item-names_layers").is_selected()
    assert browser.find_element(By.ID, "item-ridge").is_selected()
    assert browser.find_element(By.ID, "total").text == "2"
    _loads_a_page(browser, lambda: _press(browser, "\n"))
    done[first] = ("names_layers", "ridge")

    # 2: by click, with a comment
    second = _student_on_page(browser, site)
    assert second != first
    browser.find_element(By.ID, "item-compute_bound").click()
    browser.find_element(By.ID, "item-names_layers").click()
    browser.find_element(By.ID, "comment").send_keys("Read the ridge point off the figure.")
    _loads_a_page(browser, browser.find_element(By.ID, "save").click)
    done[second] = ("names_layers", "compute_bound")

    # 3: a key, a click, and Ctrl+Enter from the comment box
    third = _student_on_page(browser, site)
    assert third not in (first, second)
    _press(browser, "2")
    browser.find_element(By.ID, "item-names_layers").click()
    browser.find_element(By.ID, "item-ridge").click()  # toggled off again
    comment = browser.find_element(By.ID, "comment")
    comment.send_keys("Good.")
    _loads_a_page(browser, lambda: comment.send_keys("\ue009\n"))  # Ctrl+Enter
    done[third] = ("names_layers",)

    marks = _marks(site)
    for student, items in done.items():
        mark = marks[(student, "roofline")]
        assert mark.items == items and mark.marker == "Ann" and mark.version == 1
    assert marks[(second, "roofline")].comment == "Read the ridge point off the figure."
    browser.get(site.url("/"))
    row = browser.find_element(By.ID, "progress-hw1-roofline")
    assert row.find_element(By.CLASS_NAME, "left").text == "1"  # 5 answers, 1 missing, 3 marked
    if os.environ.get("GRADER_SCREENSHOT"):
        browser.get(site.url("/q/hw1/roofline/next"))
        _press(browser, "1")
        browser.find_element(By.ID, "comment").send_keys("Which layer is below the ridge?")
        browser.save_screenshot(os.environ["GRADER_SCREENSHOT"])


def test_a_hostile_answer_is_shown_as_text(site: Site, browser: WebDriver) -> None:
    browser.get(site.url("/q/hw1/roofline"))
    _loads_a_page(browser, browser.find_element(By.ID, "names").click)  # show the names
    _loads_a_page(browser, browser.find_element(By.LINK_TEXT, "dave").click)
    answer = browser.find_element(By.ID, "answer")
    assert HOSTILE in answer.text  # every character shown, nothing run or rendered
    assert answer.find_elements(By.CSS_SELECTOR, "script, b, img") == []
    assert "owned" not in browser.title
    assert "7 * 7" in answer.text and "49" not in answer.text
    assert "2 cells carry this question" not in answer.text  # dave's flops has the flag
    _loads_a_page(browser, browser.find_element(By.ID, "names").click)  # hidden again


def _scores(browser: WebDriver) -> dict[str, str]:
    return {row.get_attribute("data-answer") or "": row.find_element(By.CLASS_NAME,
                                                                      "score").text
            for row in browser.find_elements(By.CSS_SELECTOR, "#answers tr[data-answer]")}


def test_editing_a_rubric_item_rescores_every_answer_that_used_it(site: Site,
                                                                  browser: WebDriver) -> None:
    browser.get(site.url("/q/hw1/roofline"))
    before = _scores(browser)
    used = {s for (s, q), m in _marks(site).items() if q == "roofline" and "ridge" in m.items}
    assert "Europe/Moscow" in browser.find_element(By.ID, "answers").text  # the course's clock
    field = browser.find_element(By.ID, "points-ridge")
    field.clear()
    field.send_keys("0.5")
    _loads_a_page(browser, browser.find_element(By.ID, "set-ridge").click)
    assert "rescored" in browser.find_element(By.ID, "notice").text
    after = _scores(browser)
    changed = {k for k in before if before[k] != after[k]}
    assert len(changed) == len(used) == 1
    [key] = changed
    assert (float(before[key]), float(after[key])) == (2.0, 1.5)
    rubric = (site.root / "solutions" / "hw1" / "rubric.toml").read_text()
    assert "ridge = { points = 0.5," in rubric
    assert rubric.startswith("# file: solutions/hw1/rubric.toml")  # its comments kept
    with open_gradebook(site.gradebook) as book:
        assert any(e.action == "rubric" and "ridge: points 1 -> 0.5" in e.detail
                   for e in written.log_entries(book))


def test_two_markers_at_once(site: Site, browser: WebDriver) -> None:
    ann = browser.current_window_handle
    browser.switch_to.new_window("window")
    ben = browser.current_window_handle
    _sign_in(browser, site, "Ben", host="localhost")  # another cookie jar: another session

    # each gets a different answer of the same question
    browser.get(site.url("/q/hw1/flops/next", "localhost"))
    bens = browser.current_url.rsplit("/", 1)[1]
    browser.switch_to.window(ann)
    browser.get(site.url("/q/hw1/flops/next"))
    anns = browser.current_url.rsplit("/", 1)[1]
    assert anns != bens

    # both open Ben's answer; Ann saves first; Ben's save is refused, with his choices kept
    browser.switch_to.window(ben)
    browser.refresh()
    browser.find_element(By.ID, "item-no_reason").click()
    browser.find_element(By.ID, "comment").send_keys("Ben's comment")
    browser.switch_to.window(ann)
    browser.get(site.url(f"/q/hw1/flops/a/{bens}"))
    student = _student_on_page(browser, site)
    browser.find_element(By.ID, "comment").send_keys("Ann's comment")
    _loads_a_page(browser, browser.find_element(By.ID, "save").click)
    browser.switch_to.window(ben)
    _loads_a_page(browser, browser.find_element(By.ID, "save").click)
    assert "after you opened it" in browser.find_element(By.ID, "error").text
    assert "Ann" in browser.find_element(By.ID, "theirs").text
    assert browser.find_element(By.ID, "item-no_reason").is_selected()
    assert browser.find_element(By.ID, "comment").get_attribute("value") == "Ben's comment"
    mark = _marks(site)[(student, "flops")]
    assert (mark.marker, mark.comment, mark.version) == ("Ann", "Ann's comment", 1)
    with open_gradebook(site.gradebook) as book:
        refused = [e for e in written.log_entries(book) if "refused" in e.action]
    assert len(refused) == 1 and refused[0].marker == "Ben"
    assert json.loads(refused[0].detail)["comment"] == "Ben's comment"  # not lost

    # saved again on top of Ann's, knowingly: it is kept, version 2
    _loads_a_page(browser, browser.find_element(By.ID, "save").click)
    mark = _marks(site)[(student, "flops")]
    assert (mark.marker, mark.items, mark.version) == ("Ben", ("no_reason",), 2)
    browser.close()
    browser.switch_to.window(ann)


def test_the_csv_and_the_feedback_carry_the_marks(site: Site, tmp_path: Path) -> None:
    marks = _marks(site)
    student = next(s for (s, q), m in marks.items() if q == "roofline" and m.comment)
    csv_path, feedback = tmp_path / "grades.csv", tmp_path / "feedback"
    result = CliRunner().invoke(main, [
        "export", "--course", str(site.course.path), "--gradebook", str(site.gradebook),
        "--csv", str(csv_path), "--long", str(tmp_path / "long.csv"),
        "--feedback", str(feedback)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    table = pd.read_csv(csv_path, keep_default_na=False).set_index("student")
    roofline = marks[(student, "roofline")]
    earned_marks = {"names_layers": 1.0, "ridge": 0.5, "compute_bound": -1.0}
    mark_points = max(0.0, sum(earned_marks[i] for i in roofline.items))
    flops = marks.get((student, "flops"))
    if flops is None:  # not marked yet: the final waits
        assert table.loc[student, "hw1_status"] == "marking_pending"
        assert table.loc[student, "hw1_final"] == ""
    checks = {"alice": 2, "bob": 1, "dave": 2, "erin": 2}[student]
    expected_raw = 100 * (checks + mark_points + (0 if flops is None else 1 - len(flops.items))
                          ) / 5
    assert float(table.loc[student, "hw1_raw"]) == pytest.approx(expected_raw, abs=0.01)
    assert table.loc["carol", "hw1_final"] == "0.00"  # no answers: 0, and nothing pending
    text = (feedback / student / "hw1.md").read_text()
    assert "## Written answers" in text
    assert "You named the layers below the ridge point." in text
    assert roofline.comment in text
    html = (feedback / student / "hw1.html").read_text()
    assert "You named the layers below the ridge point." in html
