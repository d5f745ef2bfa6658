"""Tests for grader/output/pages.py: the one jinja2 environment, and Markdown shown as the
notebook shows it without letting a student's text add markup."""

from __future__ import annotations

from html.parser import HTMLParser

from grader.output.pages import markdown


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.attributes: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attributes += [name for name, _ in attrs]


def _parse(html: str) -> _Tags:
    tags = _Tags()
    tags.feed(html)
    return tags


def test_markdown_renders_what_a_notebook_renders() -> None:
    html = markdown("First paragraph,\nwrapped.\n\n- one\n- two\n\n`conv2` is *memory-bound*.")
    tags = _parse(html)
    assert tags.tags.count("p") == 2 and tags.tags.count("li") == 2
    assert "code" in tags.tags and "em" in tags.tags
    assert "First paragraph,\nwrapped." in html  # one paragraph: the line break is a space


def test_markdown_keeps_a_students_markup_as_text() -> None:
    hostile = ('<script>alert(1)</script><b>bold</b> <img src=x onerror="alert(2)"> '
               '[click](javascript:alert(3)) ![pixel](http://example.com/p.png) <http://x.y>')
    tags = _parse(markdown(hostile))
    assert set(tags.tags) == {"p"}  # no script, b, img or a element
    assert tags.attributes == []
    text = markdown(hostile)
    assert "&lt;script&gt;" in text and "[click](javascript:alert(3))" in text
    assert "![pixel](http://example.com/p.png)" in text
