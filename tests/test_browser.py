"""Every page of the built book, opened in headless Chromium (Playwright), offline.

The book must work as a person opens it. The pages are served from
127.0.0.1 and loaded one by one in the system Chromium (Debian's
``chromium``, through Playwright's ``executable_path``: no browser is
downloaded). For each page:

- it loads (HTTP 200) and nothing is logged as an error: console errors,
  uncaught exceptions, failed or 4xx/5xx loads (a missing ``/favicon.ico``
  is the only exception);
- no request leaves 127.0.0.1 (each one is refused and reported);
- every ``<img>`` has loaded (``naturalWidth > 0``), every formula is typeset
  by MathJax, every same-origin link names a file of the build (and, with a
  fragment, an ``id`` in it);
- no table shows a literal ``**`` (Markdown bold that was not rendered), and
  no table is wider than its container without a horizontal scroll bar right
  under it (a bar below the cell's later tables is out of the reader's sight);
- the findings page holds a table and shows no code (its cells' inputs are
  tagged ``hide-input`` or ``remove-input``).

Two ways in:

- ``make browser-test`` (after ``make book``) runs the test marked ``book``
  against ``book/_build/html``: ``pytest -m book --book-html book/_build/html``.
  Screenshots of the findings page and one chapter go to
  ``book/_build/screenshots/``. Without ``--book-html`` that test is skipped, so
  ``make test`` needs no built book.
- ``make test`` builds a tiny book with jupyter-book: pages that pass, and
  one page per defect (a broken image, a console error, ``**`` in a table, an
  overflowing table, two wide tables sharing one scroll bar, code on a findings
  page), and shows that the check fails on each, and only there.

Both skip, saying why, when Playwright or Chromium is missing.
"""

from __future__ import annotations

import functools
import http.server
import os
import re
import shutil
import struct
import subprocess
import sys
import threading
import zlib
from pathlib import Path
from urllib.parse import unquote, urlsplit

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
# Headless Chromium on a machine without network: the background-networking
# flags stop it from phoning home at start; --no-sandbox because CI runs as root.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORT = {"width": 1280, "height": 900}
PAGE_TIMEOUT_MS = 30_000
IGNORED_MISSING = {"/favicon.ico"}
SCREENSHOT_CHAPTER = "chapters/02_unknown_harm.html"

# Evaluated in each page once it has loaded: waits for MathJax and the images,
# then reports what the checks need.
PROBE_JS = r"""
async () => {
  const BAR_GAP = 24;  // px between a table's bottom and its scroll bar, at most (padding, a margin)
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) {
    try { await MathJax.startup.promise; } catch (e) {}
  }
  const imgs = Array.from(document.images);
  imgs.forEach(i => { if (i.loading === 'lazy') i.loading = 'eager'; });
  await Promise.all(imgs.map(i => i.complete ? null :
    new Promise(r => { i.addEventListener('load', r); i.addEventListener('error', r); setTimeout(r, 5000); })));
  const math = Array.from(document.querySelectorAll('.math'));
  const article = document.querySelector('article') || document.querySelector('main') || document.body;
  const tables = Array.from(document.querySelectorAll('table')).map((t, n) => {
    const caption = (t.caption ? t.caption.textContent : t.textContent).replace(/\s+/g, ' ').trim().slice(0, 60);
    const rect = t.getBoundingClientRect();
    if ((rect.width === 0 && rect.height === 0) || t.closest('details:not([open])')) {
      return {n, caption, hidden: true};  // a folded cell, or a closed dropdown
    }
    // Walk up to the article. Where the table (or the box that scrolls it)
    // sticks out of an ancestor that clips it, or out of the article, that
    // ancestor must scroll sideways and show its scroll bar, right under the
    // table (not under the next tables of the same cell, out of sight); it is
    // then the box that must fit further up.
    let box = t, problem = null;
    for (let el = t.parentElement; el; el = el.parentElement) {
      const s = getComputedStyle(el);
      const over = box.getBoundingClientRect().right - el.getBoundingClientRect().right;
      if ((s.overflowX !== 'visible' || el === article) && over > 1) {
        const bar = el.offsetHeight - el.clientHeight - parseFloat(s.borderTopWidth) - parseFloat(s.borderBottomWidth);
        if (!['auto', 'scroll'].includes(s.overflowX) || bar <= 0) {
          problem = `${Math.round(over)} px wider than its container, without a horizontal scroll bar`;
          break;
        }
        const below = el.getBoundingClientRect().bottom - rect.bottom - bar;
        if (below > BAR_GAP) {
          problem = `${Math.round(over)} px wider than its container, whose scroll bar is ${Math.round(below)} px ` +
                    `below the table, out of sight`;
          break;
        }
        box = el;
      }
      if (el === article) break;
    }
    return {n, caption, stars: t.textContent.includes('**'), problem};
  });
  // Code a reader sees: cell inputs that are rendered (a removed input is not in the page; a folded
  // one sits in a closed <details>, whose content Chromium lays out but does not show).
  const code = Array.from(document.querySelectorAll('.cell_input')).filter(el => {
    const r = el.getBoundingClientRect();
    return r.width > 0 && r.height > 0 && !el.closest('details:not([open])') &&
           (!el.checkVisibility || el.checkVisibility({visibilityProperty: true, opacityProperty: true}));
  }).length;
  return {
    code, title: document.title, images: imgs.map(i => ({src: i.currentSrc || i.src, complete: i.complete,
                                                     width: i.naturalWidth})),
    links: Array.from(document.querySelectorAll('a[href]')).map(a => a.href),
    tables, math: math.length, mathUnrendered: math.filter(m => !m.querySelector('mjx-container')).length,
  };
}
"""


# ---------------------------------------------------------------------------
# The check
# ---------------------------------------------------------------------------


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 (stdlib name)
        pass


class _Server(http.server.ThreadingHTTPServer):
    def handle_error(self, request, client_address):
        if not isinstance(sys.exc_info()[1], ConnectionError):  # the browser moved on mid-download
            super().handle_error(request, client_address)


@functools.cache
def _ids(path: Path) -> frozenset[str]:
    return frozenset(re.findall(r'\bid="([^"]+)"', path.read_text(errors="replace")))


def link_failures(links: list[str], origin: str, root: Path) -> list[str]:
    """Same-origin links whose file (or fragment ``id``) is not in the build, one line per target."""
    broken: dict[str, int] = {}
    for href in links:
        if not href.startswith(origin):
            continue  # other hosts, mailto:, javascript: are not ours to check
        parts = urlsplit(href)
        path = unquote(parts.path)
        target = root / path.lstrip("/")
        if path.endswith("/"):
            target = target / "index.html"
        if not target.is_file():
            key = path
        elif parts.fragment and target.suffix == ".html" and unquote(parts.fragment) not in _ids(target):
            key = f"{path}#{parts.fragment}"
        else:
            continue
        broken[key] = broken.get(key, 0) + 1
    return [f"broken link to {key} ({n} link{'s' if n > 1 else ''})" for key, n in sorted(broken.items())]


class BookChecker:
    """Serves one built book on 127.0.0.1 and checks its pages in one Chromium page."""

    def __init__(self, browser, root: Path):
        self.root = root.resolve()
        handler = functools.partial(_QuietHandler, directory=str(self.root))
        self.server = _Server(("127.0.0.1", 0), handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        host, port = self.server.server_address[:2]
        self.origin = f"http://{host}:{port}/"
        self.context = browser.new_context(viewport=VIEWPORT)
        self.context.route("**/*", self._route)
        self.page = self.context.new_page()
        self.events: list[str] = []
        self.page.on("console", self._console)
        self.page.on("pageerror", lambda err: self.events.append(f"uncaught exception: {err}"))
        self.page.on("requestfailed", self._failed)
        self.page.on("response", self._response)
        self.page.on("websocket", lambda ws: self.events.append(f"request leaves the machine: {ws.url}"))

    def _route(self, route) -> None:
        url = route.request.url
        if url.startswith(self.origin) or urlsplit(url).scheme in ("data", "blob", "about"):
            route.continue_()
        else:  # refused, so the check never waits on (or needs) the network
            self.events.append(f"request leaves the machine: {url}")
            route.abort("blockedbyclient")

    def _ignored(self, url: str) -> bool:
        return urlsplit(url).path in IGNORED_MISSING

    def _console(self, msg) -> None:
        if msg.type in ("error", "assert") and not self._ignored(msg.location.get("url", "")):
            where = msg.location.get("url", "")
            self.events.append(f"console.{msg.type}: {msg.text}" + (f" ({where})" if where else ""))

    def _failed(self, request) -> None:
        if request.url.startswith(self.origin) and not self._ignored(request.url):
            self.events.append(f"failed to load {request.url}: {request.failure}")

    def _response(self, response) -> None:
        if response.status >= 400 and not self._ignored(response.url):
            self.events.append(f"HTTP {response.status}: {response.url}")

    def pages(self) -> list[str]:
        """Every page of the build, relative to its root (Sphinx's own ``_static`` etc. left out)."""
        return sorted(
            p.relative_to(self.root).as_posix()
            for p in self.root.rglob("*.html")
            if not p.relative_to(self.root).parts[0].startswith("_")
        )

    def check(self, rel: str, screenshot: Path | None = None) -> list[str]:
        """Load one page; return its failures (empty when it passes)."""
        self.page.goto("about:blank")  # ends the previous page's loads before this page's are recorded
        self.events.clear()
        response = self.page.goto(self.origin + rel, wait_until="load", timeout=PAGE_TIMEOUT_MS)
        failures = []
        if response is None or response.status != 200:
            failures.append(f"page did not load: HTTP {response.status if response else '?'}")
        for attempt in range(3):  # a redirect page (index.html) navigates on: probe where it lands
            try:
                info = self.page.evaluate(PROBE_JS)
                break
            except Exception as err:  # playwright's Error: the page navigated while being probed
                if "context was destroyed" not in str(err) or attempt == 2:
                    raise
                self.page.wait_for_load_state("load")
        self.page.wait_for_timeout(200)  # late console messages and resource failures
        failures += list(dict.fromkeys(self.events))
        failures += [
            f"image not rendered: {img['src']}" for img in info["images"] if not img["complete"] or img["width"] == 0
        ]
        if info["mathUnrendered"]:
            failures.append(f"{info['mathUnrendered']} of {info['math']} formulas not typeset by MathJax")
        failures += link_failures(info["links"], self.origin, self.root)
        for t in info["tables"]:
            if t.get("hidden"):
                continue
            if t["stars"]:
                failures.append(
                    f"table {t['n'] + 1} shows a literal '**' (Markdown bold not rendered): {t['caption']!r}"
                )
            if t["problem"]:
                failures.append(f"table {t['n'] + 1} is {t['problem']}: {t['caption']!r}")
        if Path(rel).stem == "findings" and not info["tables"]:
            failures.append("the findings page has no <table>")
        if Path(rel).stem == "findings" and info["code"]:
            failures.append(f"the findings page shows {info['code']} code cell(s): tag them hide-input or remove-input")
        if screenshot is not None:
            self.screenshot(screenshot)
        return failures

    def screenshot(self, out: Path) -> None:
        """A PNG of the whole page (up to 6000 px high).

        The viewport is stretched to the page's height for the shot and put back
        (a full-page capture misplaces this theme's sticky sidebar).
        """
        height = self.page.evaluate("document.documentElement.scrollHeight")
        self.page.set_viewport_size({"width": VIEWPORT["width"], "height": min(max(height, VIEWPORT["height"]), 6000)})
        self.page.wait_for_timeout(300)  # let the theme lay out the taller viewport
        out.parent.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(out))
        self.page.set_viewport_size(VIEWPORT)

    def close(self) -> None:
        self.context.close()
        self.server.shutdown()
        self.server.server_close()


# ---------------------------------------------------------------------------
# Fixtures
# ---------------------------------------------------------------------------


def find_chromium() -> str | None:
    """The Chromium binary: ``$CHROMIUM``, else the first on PATH."""
    for name in (os.environ.get("CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        if name and (path := shutil.which(name)):
            return path
    return None


@pytest.fixture(scope="module")
def browser(request):
    # Asked for by name (make browser-test), a missing browser is a failure, not a skip.
    missing = pytest.fail if request.config.getoption("--book-html") else pytest.skip
    try:
        from playwright import sync_api
    except ImportError:
        missing("Playwright is not installed: pip install -e '.[dev]' (no browser download is needed)")
    binary = find_chromium()
    if binary is None:
        missing("Chromium not found: apt-get install chromium (or set $CHROMIUM)")
    with sync_api.sync_playwright() as pw:
        # Playwright hides scroll bars by default; the overflow check needs them as a reader sees them.
        b = pw.chromium.launch(executable_path=binary, args=CHROMIUM_ARGS, ignore_default_args=["--hide-scrollbars"])
        yield b
        b.close()


# ---------------------------------------------------------------------------
# The built book (make browser-test)
# ---------------------------------------------------------------------------


@pytest.mark.book
def test_every_page_of_the_built_book(request, browser):
    html = request.config.getoption("--book-html")
    if not html:
        pytest.skip("no built book given: make browser-test runs this after make book (--book-html DIR)")
    root = Path(html).resolve()
    assert (root / "index.html").is_file(), f"no built book at {root}: run make book (or make html) first"
    checker = BookChecker(browser, root)
    shots = root.parent / "screenshots"
    pages = checker.pages()
    chapters = [p for p in pages if p.startswith("chapters/")]
    chapter = SCREENSHOT_CHAPTER if SCREENSHOT_CHAPTER in pages else (chapters or [None])[0]
    to_shoot = {"findings.html": shots / "findings.png"}
    if chapter:
        to_shoot[chapter] = shots / f"{Path(chapter).stem}.png"
    failures = {}
    try:
        for rel in pages:
            found = checker.check(rel, screenshot=to_shoot.get(rel))
            print(f"{'FAIL' if found else 'ok':4} {rel}")
            if found:
                failures[rel] = found
    finally:
        checker.close()
    assert "findings.html" in pages, "the findings page is missing from the build"
    assert not failures, "\n".join(f"{rel}: {msg}" for rel, msgs in failures.items() for msg in msgs)


# ---------------------------------------------------------------------------
# The check itself, on a tiny book with one defect per page (make test)
# ---------------------------------------------------------------------------


def _png(width: int = 4, height: int = 3) -> bytes:
    """A small grey PNG, written by hand (no imaging library needed)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    raw = b"".join(b"\0" + b"\x80" * width for _ in range(height))
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


WIDE_ROW = "".join(f"<td>column {i} holds 12345.678</td>" for i in range(40))
PAGES = {
    # A page that must pass: a formula, an image, links, a table, a wide notebook output (its scroll bar
    # comes from book.css).
    "intro.md": "# Tiny book\n\nInline $x^2 + 1$ and a block:\n\n$$\\int_0^1 x\\,dx = \\tfrac12$$\n\n"
    "![a grey square](grey.png)\n\nSee [the wide output](wide_output.ipynb) and [the findings](findings.ipynb)."
    "\n\n| share | accuracy |\n| ---: | ---: |\n| 0 | 53.1 |\n| 50 | 40.5 |\n",
    "broken_image.md": "# Broken image\n\n![missing](missing.png)\n",
    "console_error.md": "# Console error\n\n<script>console.error('deliberate error')</script>\n\nText.\n",
    "stars_table.md": "# Stars in a table\n\n| variant | ES |\n| --- | ---: |\n| D_Natural | \\*\\*53.1\\*\\* |\n",
    "overflow_table.md": f"# Overflowing table\n\n<table><tr>{WIDE_ROW}</tr></table>\n",
}
DEFECTS = {  # page -> a failure the check must report for it
    "broken_image.html": "image not rendered",
    "console_error.html": "console.error: deliberate error",
    "stars_table.html": "literal '**'",
    "overflow_table.html": "without a horizontal scroll bar",
    "shared_scroll.html": "out of sight",
    "code/findings.html": "the findings page shows 1 code cell",
}


def _wide_output_notebook() -> nbformat.NotebookNode:
    """A notebook with a DataFrame output far wider than the page, as pandas renders it."""
    import pandas as pd

    df = pd.DataFrame(
        [[12345.678 + i + j for i in range(40)] for j in range(3)],
        columns=[f"a long column name {i}" for i in range(40)],
    )
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    out = nbformat.v4.new_output(
        "execute_result", data={"text/html": df.to_html(), "text/plain": "df"}, execution_count=1
    )
    styled = nbformat.v4.new_output(
        "execute_result",
        data={"text/html": df.style.format("{:.1f}").to_html(), "text/plain": "styler"},
        execution_count=2,
    )
    nb.cells = [
        nbformat.v4.new_markdown_cell("# Wide output"),
        nbformat.v4.new_code_cell("df", outputs=[out], execution_count=1),
        nbformat.v4.new_code_cell("df.style", outputs=[styled], execution_count=2),
    ]
    return nb


def _code_notebook(title: str, cells: list[tuple[str, list[str], str]]) -> nbformat.NotebookNode:
    """An executed-looking notebook: a title, then ``(source, tags, html output)`` per code cell."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_markdown_cell(f"# {title}")]
    for k, (source, tags, html) in enumerate(cells, start=1):
        out = nbformat.v4.new_output("execute_result", data={"text/html": html, "text/plain": "x"}, execution_count=k)
        nb.cells.append(
            nbformat.v4.new_code_cell(source, metadata={"tags": tags}, outputs=[out] if html else [], execution_count=k)
        )
    return nb


FINDINGS_TABLE = (
    "<div class='table-scroll'><table class='findings-table'><tr><th>claim</th><th>holds</th></tr>"
    "<tr><td>Unknown examples are fitted slower</td><td><b>yes</b></td></tr></table></div>"
)
WIDE_TABLE = f"<table><tr>{WIDE_ROW}</tr></table>"
NOTEBOOKS = {
    # The findings page as the book builds it: inputs hidden (a toggle) or removed, outputs shown.
    "findings.ipynb": _code_notebook(
        "Findings",
        [("setup = 1", ["hide-input"], ""), ("HTML(table)", ["remove-input"], FINDINGS_TABLE)],
    ),
    # Defects: a code cell shown on a findings page; two wide tables in one output, one scroll bar.
    "code/findings.ipynb": _code_notebook(
        "Findings with code", [("HTML(table)", [], FINDINGS_TABLE), ("setup = 1", ["hide-input"], "")]
    ),
    "shared_scroll.ipynb": _code_notebook("Shared scroll bar", [("HTML(two)", [], WIDE_TABLE + WIDE_TABLE)]),
}


@pytest.fixture(scope="module")
def tiny_book(tmp_path_factory):
    jb = Path(sys.executable).with_name("jupyter-book")
    if not jb.exists():
        pytest.skip("jupyter-book is not installed next to this Python")
    book = tmp_path_factory.mktemp("tiny") / "book"
    book.mkdir()
    shutil.copytree(ROOT / "book" / "_static", book / "_static")
    for name, text in PAGES.items():
        (book / name).write_text(text)
    (book / "grey.png").write_bytes(_png())
    nbformat.write(_wide_output_notebook(), book / "wide_output.ipynb")
    for name, nb in NOTEBOOKS.items():
        (book / name).parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, book / name)
    files = [Path(n).stem for n in PAGES if n != "intro.md"] + ["wide_output"]
    files += [str(Path(n).with_suffix("")) for n in NOTEBOOKS]
    (book / "_toc.yml").write_text(
        "format: jb-book\nroot: intro\nchapters:\n" + "".join(f"  - file: {f}\n" for f in files)
    )
    # Not strict (-W): the broken image is a Sphinx warning, and it must reach the page.
    result = subprocess.run(
        [
            str(jb),
            "build",
            str(book),
            "--config",
            str(ROOT / "_config.yml"),
            "--toc",
            str(book / "_toc.yml"),
            "--path-output",
            str(book),
            "-q",
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return book / "_build" / "html"


@pytest.fixture(scope="module")
def tiny_report(browser, tiny_book):
    checker = BookChecker(browser, tiny_book)
    try:
        return {rel: checker.check(rel) for rel in checker.pages()}
    finally:
        checker.close()


def test_clean_pages_of_the_tiny_book_pass(tiny_report):
    clean = {rel: found for rel, found in tiny_report.items() if rel not in DEFECTS}
    assert {"intro.html", "findings.html", "wide_output.html"} <= set(clean)
    assert clean == {rel: [] for rel in clean}


# Other reports a defect brings with it: the missing image is also a 404 and a console message.
ECHOES = {"broken_image.html": "missing.png"}


@pytest.mark.parametrize("page", sorted(DEFECTS))
def test_the_check_fails_on_a_broken_page(tiny_report, page):
    found = tiny_report[page]
    assert any(DEFECTS[page] in f for f in found), found
    unrelated = [f for f in found if DEFECTS[page] not in f and ECHOES.get(page, DEFECTS[page]) not in f]
    assert not unrelated, unrelated


def test_a_link_to_a_missing_page_or_anchor_is_reported(tmp_path):
    (tmp_path / "a.html").write_text('<p id="here">x</p>')
    origin = "http://127.0.0.1:1/"
    found = link_failures(
        [origin + "a.html#here", origin + "a.html#gone", origin + "b.html", "https://example.org/x"], origin, tmp_path
    )
    assert found == ["broken link to /a.html#gone (1 link)", "broken link to /b.html (1 link)"]
