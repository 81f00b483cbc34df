"""Open every page of the built book in headless Chromium and check it.

The book must work as a person opens it, offline. This script serves
``book/_build/html`` on 127.0.0.1 (an ``http.server`` on a free port, in a
thread), starts headless Chromium and drives it through the Chrome DevTools
Protocol over ``--remote-debugging-pipe``, so it needs nothing beyond the
standard library and a Chromium binary (Debian's ``chromium``). For every
``.html`` page it checks that:

- the page loads (HTTP 200, load event fired);
- nothing is logged as an error: ``console.error``, uncaught exceptions,
  browser log entries of level error, failed or 4xx/5xx resource loads
  (a missing ``/favicon.ico`` is the only exception);
- no request leaves 127.0.0.1 (the book must not need the network);
- every ``<img>`` finished loading with ``naturalWidth > 0``;
- every formula was typeset by MathJax;
- every same-origin link (fragment and query stripped) names a file that
  exists in the build.

The findings page must also contain a ``<table>``. Screenshots of the
findings page and of one chapter (``chapters/02_unknown_harm.html``, or the
first chapter present) are saved to ``book/_build/screenshots/``.

Usage:
    python tools/browser_test.py [HTML_DIR] [--chromium PATH] [--screenshots DIR]

Exit status: 0 when every check passed, 1 with a list of failures otherwise,
2 when the test cannot run (no built book, no Chromium).
"""

from __future__ import annotations

import argparse
import base64
import fcntl
import functools
import http.server
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import unquote, urlsplit

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_HTML = ROOT / "book" / "_build" / "html"
# Flags for a headless Chromium on a machine without network: the background
# networking flags stop Chromium from phoning home at start (each attempt would
# otherwise be refused and logged); --no-sandbox because CI runs as root.
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
    "--mute-audio",
    "--window-size=1280,900",
]
PAGE_TIMEOUT_S = 30.0
IGNORED_MISSING = {"/favicon.ico"}
SCREENSHOT_CHAPTER = "chapters/02_unknown_harm.html"

# Evaluated in each page once it has loaded: waits for MathJax to finish, then
# reports what the checks need. Returns a JSON string.
PAGE_PROBE_JS = r"""
(async () => {
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) {
    try { await MathJax.startup.promise; } catch (e) {}
  }
  const imgs = Array.from(document.images).map(i => ({
    src: i.currentSrc || i.src, complete: i.complete, width: i.naturalWidth}));
  const links = Array.from(document.querySelectorAll('a[href]')).map(a => a.href);
  const math = Array.from(document.querySelectorAll('.math'));
  const unrendered = math.filter(m => !m.querySelector('mjx-container')).length;
  return JSON.stringify({
    title: document.title, readyState: document.readyState, images: imgs,
    links: links, tables: document.querySelectorAll('table').length,
    math: math.length, mathUnrendered: unrendered});
})()
"""


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    """Static file handler that records 404s instead of printing every request."""

    missing: list[str] = []

    def log_message(self, format: str, *args) -> None:  # noqa: A002 (stdlib name)
        pass

    def send_error(self, code, message=None, explain=None):
        if code == 404:
            self.missing.append(self.path)
        super().send_error(code, message, explain)


def serve(root: Path) -> tuple[http.server.ThreadingHTTPServer, str]:
    """Serve ``root`` on 127.0.0.1 at a free port, in a daemon thread.

    Returns:
        The server (call ``shutdown()``) and its base URL, ending in ``/``.
    """
    handler = functools.partial(QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    host, port = server.server_address[:2]
    return server, f"http://{host}:{port}/"


class Chromium:
    """Headless Chromium driven over the DevTools protocol on a pipe.

    With ``--remote-debugging-pipe`` Chromium reads commands from fd 3 and
    writes replies and events to fd 4, each message a JSON object ended by a
    NUL byte. One page target is opened and attached in "flatten" mode, so
    page commands carry its ``sessionId``.
    """

    def __init__(self, binary: str) -> None:
        self.profile = tempfile.mkdtemp(prefix="browser-test-profile-")
        to_chrome_r, self._to_chrome = os.pipe()
        self._from_chrome, from_chrome_w = os.pipe()
        # Move Chromium's ends to fds >= 10, so that bash can put them on 3 and
        # 4 without one redirection overwriting the other (dash, Debian's sh,
        # accepts only single-digit fds, hence bash).
        hi_r = fcntl.fcntl(to_chrome_r, fcntl.F_DUPFD_CLOEXEC, 10)
        hi_w = fcntl.fcntl(from_chrome_w, fcntl.F_DUPFD_CLOEXEC, 10)
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        args = [binary, *CHROMIUM_FLAGS, f"--user-data-dir={self.profile}",
                "--remote-debugging-pipe", "about:blank"]
        self.proc = subprocess.Popen(
            ["bash", "-c", f'exec "$@" 3<&{hi_r} 4>&{hi_w}', "bash", *args],
            pass_fds=(hi_r, hi_w),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(hi_r)
        os.close(hi_w)
        self._next_id = 0
        self._replies: dict[int, dict] = {}
        self.events: list[dict] = []
        self._cond = threading.Condition()
        self._closed = False
        threading.Thread(target=self._read, daemon=True).start()
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = self.send(
            "Target.attachToTarget", {"targetId": target, "flatten": True}
        )["sessionId"]

    def _read(self) -> None:
        buf = b""
        while True:
            chunk = os.read(self._from_chrome, 1 << 16)
            if not chunk:
                break
            buf += chunk
            *messages, buf = buf.split(b"\0")
            with self._cond:
                for raw in messages:
                    msg = json.loads(raw)
                    if "id" in msg:
                        self._replies[msg["id"]] = msg
                    else:
                        self.events.append(msg)
                self._cond.notify_all()
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def send(self, method: str, params: dict | None = None, session: str | None = None,
             timeout: float = PAGE_TIMEOUT_S) -> dict:
        """Send one command and wait for its reply.

        Returns:
            The reply's ``result``. Raises RuntimeError on a protocol error.
        """
        self._next_id += 1
        msg = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self._to_chrome, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._next_id not in self._replies:
                left = deadline - time.monotonic()
                if self._closed or left <= 0:
                    raise RuntimeError(f"no reply to {method} from Chromium")
                self._cond.wait(left)
            reply = self._replies.pop(self._next_id)
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error'].get('message')}")
        return reply.get("result", {})

    def page(self, method: str, params: dict | None = None, **kw) -> dict:
        """Send a command to the attached page."""
        return self.send(method, params, session=self.session, **kw)

    def wait_event(self, method: str, start: int, timeout: float) -> bool:
        """Wait for an event ``method`` from the page among events[start:]."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                if any(e.get("method") == method and e.get("sessionId") == self.session
                       for e in self.events[start:]):
                    return True
                left = deadline - time.monotonic()
                if self._closed or left <= 0:
                    return False
                self._cond.wait(left)

    def close(self) -> None:
        try:
            self.send("Browser.close", timeout=5)
        except RuntimeError:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._to_chrome)
        shutil.rmtree(self.profile, ignore_errors=True)


def find_chromium(explicit: str | None) -> str | None:
    """The Chromium binary: --chromium, $CHROMIUM, or the first on PATH."""
    for name in (explicit, os.environ.get("CHROMIUM"), "chromium", "chromium-browser",
                 "google-chrome", "google-chrome-stable"):
        if name and (path := shutil.which(name)):
            return path
    return None


def event_failures(events: list[dict], session: str, origin: str) -> list[str]:
    """Errors, failed loads and off-machine requests among a page's events."""
    failures = []
    urls: dict[str, str] = {}  # requestId -> url
    for ev in events:
        if ev.get("sessionId") != session:
            continue
        method, p = ev.get("method"), ev.get("params", {})
        if method == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
            text = " ".join(str(a.get("value", a.get("description", ""))) for a in p["args"])
            failures.append(f"console.{p['type']}: {text}")
        elif method == "Runtime.exceptionThrown":
            d = p["exceptionDetails"]
            text = d.get("exception", {}).get("description") or d.get("text")
            failures.append(f"uncaught exception: {text}")
        elif method == "Log.entryAdded" and p["entry"]["level"] == "error":
            entry = p["entry"]
            if urlsplit(entry.get("url", "")).path in IGNORED_MISSING:
                continue
            failures.append(f"browser log error: {entry['text']} {entry.get('url', '')}".strip())
        elif method == "Network.requestWillBeSent":
            url = p["request"]["url"]
            urls[p["requestId"]] = url
            scheme = urlsplit(url).scheme
            if scheme in ("http", "https", "ws", "wss") and not url.startswith(origin):
                failures.append(f"request leaves the machine: {url}")
        elif method == "Network.responseReceived":
            status, url = p["response"]["status"], p["response"]["url"]
            if status >= 400 and urlsplit(url).path not in IGNORED_MISSING:
                failures.append(f"HTTP {status}: {url}")
        elif method == "Network.loadingFailed" and not p.get("canceled"):
            url = urls.get(p["requestId"], "?")
            if urlsplit(url).path not in IGNORED_MISSING:
                failures.append(f"failed to load {url}: {p.get('errorText')}")
    return failures


def link_failures(links: list[str], origin: str, root: Path) -> list[str]:
    """Same-origin links whose file does not exist under ``root``, one per file."""
    broken: dict[str, int] = {}
    for href in links:
        if not href.startswith(origin):
            continue  # other hosts, mailto:, javascript: are not ours to check
        path = unquote(urlsplit(href).path)
        target = root / path.lstrip("/")
        if path.endswith("/"):
            target = target / "index.html"
        if not target.is_file():
            broken[path] = broken.get(path, 0) + 1
    return [f"broken link to {path} ({n} link{'s' if n > 1 else ''})"
            for path, n in sorted(broken.items())]


def screenshot(browser: Chromium, out: Path, width: int = 1280, height: int = 900) -> None:
    """Save a PNG of the current page, full height up to 6000 px.

    The viewport is stretched to the page's height for the shot and then put
    back (``captureBeyondViewport`` mis-places this theme's sticky sidebar).
    """
    metrics = browser.page("Page.getLayoutMetrics")
    size = metrics.get("cssContentSize") or metrics["contentSize"]
    full = int(min(max(size["height"], height), 6000))
    browser.page("Emulation.setDeviceMetricsOverride",
                 {"width": width, "height": full, "deviceScaleFactor": 1, "mobile": False})
    time.sleep(0.3)  # let the theme re-lay out for the taller viewport
    data = browser.page("Page.captureScreenshot", {"format": "png"})
    browser.page("Emulation.setDeviceMetricsOverride",
                 {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(base64.b64decode(data["data"]))


def check_page(browser: Chromium, base: str, rel: str, root: Path) -> tuple[list[str], dict]:
    """Load one page and return its failures and the probe's report."""
    start = len(browser.events)
    url = base + rel
    nav = browser.page("Page.navigate", {"url": url})
    if nav.get("errorText"):
        return [f"navigation failed: {nav['errorText']}"], {}
    if not browser.wait_event("Page.loadEventFired", start, PAGE_TIMEOUT_S):
        return [f"load event not fired within {PAGE_TIMEOUT_S:.0f} s"], {}
    res = browser.page("Runtime.evaluate", {"expression": PAGE_PROBE_JS,
                                            "awaitPromise": True, "returnByValue": True})
    if "exceptionDetails" in res:
        return [f"probe script failed: {res['exceptionDetails'].get('text')}"], {}
    info = json.loads(res["result"]["value"])
    time.sleep(0.2)  # let late console messages and resource failures arrive
    failures = event_failures(browser.events[start:], browser.session, base)
    for img in info["images"]:
        if not img["complete"] or img["width"] == 0:
            failures.append(f"image not rendered: {img['src']}")
    if info["mathUnrendered"]:
        failures.append(f"{info['mathUnrendered']} of {info['math']} formulas not typeset")
    failures += link_failures(info["links"], base, root)
    return failures, info


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("html", nargs="?", type=Path, default=DEFAULT_HTML,
                        help="built HTML folder (default: book/_build/html)")
    parser.add_argument("--chromium", help="Chromium binary (default: $CHROMIUM or PATH)")
    parser.add_argument("--screenshots", type=Path, default=None,
                        help="screenshot folder (default: HTML/../screenshots)")
    args = parser.parse_args(argv)

    root = args.html.resolve()
    shots = args.screenshots or root.parent / "screenshots"
    if not (root / "index.html").is_file():
        print(f"browser test: no built book at {root} (run make html)", file=sys.stderr)
        return 2
    binary = find_chromium(args.chromium)
    if binary is None:
        print("browser test: Chromium not found (apt-get install chromium, or set "
              "$CHROMIUM)", file=sys.stderr)
        return 2

    pages = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.html")
                   if not p.relative_to(root).parts[0].startswith("_"))
    chapters = [p for p in pages if p.startswith("chapters/")]
    to_shoot = {"findings.html": "findings.png"}
    chapter = SCREENSHOT_CHAPTER if SCREENSHOT_CHAPTER in pages else (chapters or [None])[0]
    if chapter:
        to_shoot[chapter] = Path(chapter).stem + ".png"

    server, base = serve(root)
    browser = Chromium(binary)
    failures: dict[str, list[str]] = {}
    try:
        for domain in ("Page", "Runtime", "Log", "Network"):
            browser.page(f"{domain}.enable")
        browser.page("Emulation.setDeviceMetricsOverride",
                     {"width": 1280, "height": 900, "deviceScaleFactor": 1, "mobile": False})
        for rel in pages:
            t0 = time.monotonic()
            page_failures, info = check_page(browser, base, rel, root)
            if rel == "findings.html" and info and info["tables"] == 0:
                page_failures.append("findings page has no <table>")
            if rel in to_shoot and info:
                screenshot(browser, shots / to_shoot[rel])
            status = "FAIL" if page_failures else "ok"
            detail = (f"{len(info.get('links', []))} links, {len(info.get('images', []))} "
                      f"images, {info.get('math', 0)} formulas" if info else "")
            print(f"{status:4} {rel}  ({detail}; {time.monotonic() - t0:.1f} s)")
            if page_failures:
                failures[rel] = page_failures
            with browser._cond:
                browser.events.clear()
    finally:
        browser.close()
        server.shutdown()

    if "findings.html" not in pages:
        failures["findings.html"] = ["page missing from the build"]
    if failures:
        print(f"\nbrowser test FAILED: {len(failures)} of {len(pages)} pages")
        for rel, msgs in failures.items():
            for msg in msgs:
                print(f"  {rel}: {msg}")
        return 1
    print(f"\nbrowser test passed: {len(pages)} pages, screenshots in {shots}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
