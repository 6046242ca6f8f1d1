"""A Sphinx extension of the book: each page's <script> tags once each.

sphinx-thebe (which Jupyter Book always loads) registers its inline configuration script twice, and the second copy
fails in the browser ("Identifier 'THEBE_JS_URL' has already been declared"); tests/test_html.py allows no console
error. This drops repeated scripts from every page.
"""


def _unique(app, pagename, templatename, context, doctree):
    seen, kept = set(), []
    for script in context.get("script_files", []):
        key = (getattr(script, "filename", None) or "", str(getattr(script, "attributes", {}).get("body", "")))
        if key not in seen:
            seen.add(key)
            kept.append(script)
    context["script_files"] = kept


def setup(app):
    app.connect("html-page-context", _unique, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
