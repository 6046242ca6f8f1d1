"""The built book, opened in a real browser (Chromium, driven by Playwright), with no network.

Runs against the smoke build (``make book-smoke`` writes it; ``make test`` runs this file after it). Skipped, with a
message saying how to enable it, where the build, Playwright or Chromium is missing. Playwright's own browser download
needs a network, so the test drives the system's Chromium (Debian's ``chromium`` package) through Playwright's API.
"""

import functools
import http.server
import os
import re
import shutil
import threading
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
HTML = Path(os.environ.get("KDLITE_HTML", ROOT / "_build" / "smoke" / "_build" / "html"))
SHOTS = ROOT / "_build" / "screenshots"
CHAPTERS = sorted(p.stem for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.md"))
CHROMIUM = os.environ.get("KDLITE_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")

if not (HTML / "index.html").is_file():
    pytest.skip(f"no smoke build at {HTML}: run `make book-smoke` first", allow_module_level=True)
playwright = pytest.importorskip("playwright.sync_api", reason="pip install playwright (in kdlite's [test] extras)")
if CHROMIUM is None:
    pytest.skip("no Chromium: install it (Debian/Ubuntu: `apt-get install chromium`) or set KDLITE_CHROMIUM to a "
                "Chromium executable to run the browser tests", allow_module_level=True)


@pytest.fixture(scope="module")
def site():
    """The build served on 127.0.0.1 (as GitHub Pages would serve it)."""
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    handler = functools.partial(Quiet, directory=str(HTML))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


@pytest.fixture(scope="module")
def browser():
    with playwright.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        yield b
        b.close()


class Visit:
    """A page opened with every request outside 127.0.0.1 refused (no network), recording what went wrong."""

    def __init__(self, browser, url: str):
        self.page = browser.new_page(viewport={"width": 1280, "height": 900})
        self.errors, self.missing, self.offsite = [], [], []
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("response", lambda r: self.missing.append(r.url) if r.status >= 400 else None)
        self.page.on("requestfailed", lambda r: None if r.url in self.offsite else self.missing.append(r.url))

        def route(r):
            if r.request.url.startswith("http://127.0.0.1"):
                return r.continue_()
            self.offsite.append(r.request.url)
            return r.abort()

        self.page.route("**/*", route)
        self.page.goto(url, wait_until="load")

    def math_done(self):
        self.page.wait_for_function("() => !window.MathJax || (MathJax.startup && MathJax.startup.promise)")
        self.page.evaluate("() => window.MathJax ? MathJax.startup.promise : null")


def page_url(site, chapter):
    return f"{site}/notebooks/{chapter}.html"


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_each_chapter_loads_offline_with_its_figures_math_and_colab_button(site, browser, chapter):
    v = Visit(browser, page_url(site, chapter))
    v.math_done()
    assert not v.missing, f"missing local files: {v.missing}"
    assert not v.errors, f"console errors: {v.errors}"
    sizes = v.page.eval_on_selector_all("img", "imgs => imgs.map(i => [i.src, i.complete && i.naturalWidth])")
    assert all(w for _, w in sizes), f"images that did not load: {[s for s, w in sizes if not w]}"
    rendered = v.page.eval_on_selector_all("mjx-container", "els => els.length")
    raw = v.page.evaluate("() => document.querySelector('main').innerText")
    if (ROOT / "notebooks" / f"{chapter}.md").read_text().count("$") >= 2:
        assert rendered > 0, "no math rendered by MathJax"
        assert not re.search(r"\\\(|\\frac|\$\$", raw), "raw LaTeX left on the page"
    colab = v.page.eval_on_selector_all("a[href*='colab.research.google.com']", "as => as.map(a => a.href)")
    assert colab and all(h.endswith(f"/notebooks/{chapter}.ipynb") for h in colab), colab
    SHOTS.mkdir(parents=True, exist_ok=True)
    v.page.screenshot(path=str(SHOTS / f"{chapter}.png"))
    v.page.close()


def test_math_uses_the_books_own_mathjax(site, browser):
    v = Visit(browser, page_url(site, CHAPTERS[1]))
    v.math_done()
    scripts = v.page.eval_on_selector_all("script[src]", "ss => ss.map(s => s.src)")
    assert any("/_static/mathjax/" in s for s in scripts), scripts
    assert not [u for u in v.offsite if "mathjax" in u.lower()], v.offsite
    v.page.close()


def test_solutions_are_folded_until_clicked(site, browser):
    chapter = next(c for c in CHAPTERS if "solution-start" in (ROOT / "notebooks" / f"{c}.md").read_text())
    v = Visit(browser, page_url(site, chapter))
    solutions = v.page.locator("div.solution")
    assert solutions.count() >= 3
    solution = solutions.first
    body = solution.locator("section").first
    assert not body.is_visible(), "a solution is open before it is clicked"
    solution.locator("button.toggle-button").click()
    body.wait_for(state="visible", timeout=5000)
    v.page.close()


def test_search_finds_a_word_of_chapter_3(site, browser):
    v = Visit(browser, f"{site}/search.html?q=temperature")
    v.page.wait_for_selector("#search-results li", timeout=20000)
    links = v.page.eval_on_selector_all("#search-results li a", "as => as.map(a => a.href)")
    assert any("03_knowledge_distillation" in h for h in links), links
    v.page.close()
