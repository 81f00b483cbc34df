"""Sphinx extension: small fixes for Jupyter Book 1.x (a duplicated script, the copyright year).

**The copyright year.** ``copyright`` in _config.yml may hold ``%Y``, replaced
here by the year of the build (Sphinx 8.1 does this itself; jupyter-book 1.x
pins Sphinx 7.4, which does not), so the footer never shows a stale year. With
``SOURCE_DATE_EPOCH`` set (a reproducible build), that date's year is used.

**The duplicated script.**

With Sphinx 7.4 (the last release jupyter-book 1.0.4 accepts), an inline script
that an extension registers after the HTML builder has started, with
``app.add_js_file(None, body=...)``, is written twice into every page: the
builder stores it once as ``filename=None`` and once, when it rebuilds its list
from the registry, as ``filename=''``, and the two do not compare equal.
sphinx-thebe registers ``const THEBE_JS_URL = ...`` this way, so every page
throws "Identifier 'THEBE_JS_URL' has already been declared" in the browser
(found by the browser test, tests/test_browser.py). This extension drops the second copy of any
inline script just before each page is written.

Loaded through ``sphinx.local_extensions`` in _config.yml.
"""

from __future__ import annotations

import os
import time


def _dedupe_scripts(app, pagename, templatename, context, doctree) -> None:
    scripts = context.get("script_files")
    if not scripts:
        return
    seen = set()
    unique = []
    for js in scripts:
        filename = getattr(js, "filename", js) or ""  # None and '' are the same script
        attrs = tuple(sorted(getattr(js, "attributes", {}).items()))
        key = (filename, attrs)
        if key in seen:
            continue
        seen.add(key)
        unique.append(js)
    # Mutate in place: the builder restores its own list from a backup after
    # each page, and the template reads this same list object.
    scripts[:] = unique


def _copyright_year(app, config) -> None:
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    year = time.gmtime(int(epoch) if epoch else None).tm_year
    if isinstance(config.copyright, str):
        config.copyright = config.copyright.replace("%Y", str(year))


def setup(app):
    # Before Sphinx's own handler (priority 800), which adjusts a plain year to SOURCE_DATE_EPOCH.
    app.connect("config-inited", _copyright_year, priority=400)
    app.connect("html-page-context", _dedupe_scripts)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
