"""The built book as a reader gets it: run after ``jupyter-book build`` (CI does).

Every chapter page shows at least one figure; no page shows a Markdown table as raw
``|---|`` text or a traceback; no line of code or printed output is wider than the page's
88 columns (it would be cut off); and no page loads a script, stylesheet, font or image from
the network, so a downloaded copy of the book reads (math included) offline.

Skipped, saying why, when ``_build/html`` is absent (build the book first:
``jupyter-book build . --toc book/_toc.yml``); ``HIRILIB_REQUIRE_BUILT_BOOK=1`` makes its
absence a failure instead (CI sets it after the build).
"""

from __future__ import annotations

import os
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HTML = ROOT / "_build" / "html"
CHAPTERS = sorted((ROOT / "chapters").glob("*.ipynb"))

if not (HTML / "index.html").is_file():
    if os.environ.get("HIRILIB_REQUIRE_BUILT_BOOK"):
        raise RuntimeError(f"{HTML} has no built book (HIRILIB_REQUIRE_BUILT_BOOK is set)")
    pytest.skip("the book is not built (_build/html is absent): "
                "jupyter-book build . --toc book/_toc.yml", allow_module_level=True)

PAGES = sorted(p for p in HTML.rglob("*.html")
               if not p.relative_to(HTML).parts[0].startswith(("_", ".")))
NETWORK = re.compile(r"^(https?:)?//", re.I)
PAGE_COLUMNS = 88


class _Page(HTMLParser):
    """What a page loads, its images, its visible text and its inline scripts."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.loads, self.images, self.text, self.inline, self.pres = [], [], [], [], []
        self._script, self._pre = None, None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "pre":
            self._pre = []
        if tag == "script":
            if a.get("src"):
                self.loads.append(("script", a["src"]))
            else:
                self._script = []
        elif tag == "link" and a.get("href"):
            rel = (a.get("rel") or "").lower()
            if any(r in rel for r in ("stylesheet", "preload", "modulepreload", "icon")):
                self.loads.append((f"link rel={rel}", a["href"]))
        elif tag in ("img", "iframe", "source", "audio", "video", "embed") and a.get("src"):
            self.loads.append((tag, a["src"]))
            if tag == "img":
                self.images.append(a["src"])

    def handle_endtag(self, tag):
        if tag == "pre" and self._pre is not None:
            self.pres.append("".join(self._pre))
            self._pre = None
        if tag == "script" and self._script is not None:
            self.inline.append("".join(self._script))
            self._script = None

    def handle_data(self, data):
        if self._script is not None:
            self._script.append(data)
        else:
            self.text.append(data)
            if self._pre is not None:
                self._pre.append(data)


def _parse(page: Path) -> _Page:
    p = _Page()
    p.feed(page.read_text(encoding="utf-8"))
    return p


def test_there_are_pages():
    assert PAGES, f"no pages in {HTML}"
    built = {p.stem for p in (HTML / "chapters").glob("*.html")}
    missing = [nb.stem for nb in CHAPTERS if nb.stem not in built]
    assert not missing, f"chapters without a built page: {missing}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(HTML)))
def test_nothing_is_loaded_from_the_network(page):
    p = _parse(page)
    remote = [f"<{what}> {url}" for what, url in p.loads if NETWORK.match(url.strip())]
    for script in p.inline:  # e.g. a loader configured to fetch from a CDN
        # Jupyter Book always defines where thebe (live code) would come from; it is fetched
        # only when a reader starts live code, which this book's config leaves off
        # (launch_buttons has no thebe), so the page itself loads nothing from there.
        script = re.sub(r"""const THEBE_JS_URL = "[^"]*";""", "", script)
        remote += [f"inline script loads {u}" for u in
                   re.findall(r"""["'](https?://[^"']+\.(?:js|css|woff2?|ttf))["']""", script)]
    assert not remote, f"{page.name} loads from the network:\n" + "\n".join(remote)
    for what, url in p.loads:  # and what it loads locally is there
        target = url.split("#")[0].split("?")[0]
        if target and not target.startswith("data:"):
            assert (page.parent / target).resolve().exists(), f"{page.name}: {what} {url} missing"


def test_math_is_rendered_by_the_shipped_mathjax():
    p = _parse(HTML / "chapters" / f"{CHAPTERS[0].stem}.html")
    mathjax = [u for what, u in p.loads if what == "script" and "mathjax" in u.lower()]
    assert mathjax and not any(NETWORK.match(u) for u in mathjax), mathjax
    fonts = list((HTML / "_static" / "mathjax").rglob("*.woff*"))
    assert fonts, "MathJax's fonts are not in _static/mathjax"


def test_stylesheets_load_no_fonts_or_imports_from_the_network():
    remote = []
    for css in HTML.joinpath("_static").rglob("*.css"):
        text = css.read_text(encoding="utf-8", errors="replace")
        for url in re.findall(r"""(?:url\(|@import\s+)["']?((?:https?:)?//[^"')\s]+)""", text):
            remote.append(f"{css.relative_to(HTML)}: {url}")
    assert not remote, "\n".join(remote)


@pytest.mark.parametrize("nb", CHAPTERS, ids=lambda p: p.stem)
def test_every_chapter_shows_a_figure(nb):
    page = HTML / "chapters" / f"{nb.stem}.html"
    figures = [src for src in _parse(page).images if "_images/" in src and
               src.endswith((".png", ".svg", ".jpg"))]
    assert figures, (f"{page.name} has no figure: were figures drawn with a non-interactive "
                     "matplotlib backend (MPLBACKEND=Agg) while the book was built?")


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(HTML)))
def test_code_and_output_fit_the_page(page):
    wide = [line for pre in _parse(page).pres for line in pre.splitlines()
            if len(line.rstrip()) > PAGE_COLUMNS]
    assert not wide, (f"{page.name}: {len(wide)} line(s) of code or output wider than "
                      f"{PAGE_COLUMNS} columns, cut off on the page:\n" + "\n".join(wide[:5]))


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(HTML)))
def test_no_raw_markdown_tables_or_tracebacks(page):
    text = "".join(_parse(page).text)
    assert not re.search(r"\|\s*:?-{3,}:?\s*\|", text), (
        f"{page.name} shows a Markdown table as raw text: use hirilib.book.table")
    for sign in ("<IPython.core.display", " object at 0x"):
        assert sign not in text, (f"{page.name} shows an object's repr ({sign}...): a phrase "
                                  "glued as Markdown is quoted with {glue:md}, not {glue:text}")
    for sign in ("Traceback (most recent call last)", "most recent call last"):
        assert sign not in text, (f"{page.name} shows a traceback: expected errors go "
                                  "through hirilib.book.show_error")
