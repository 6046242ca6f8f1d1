"""Checks on a built book (run by `make test` after the smoke build): `python tests/check_book.py _build/.../html`.

Every chapter has a page with figures, and its Colab button opens the paired .ipynb.
"""

import re
import sys
from pathlib import Path

html = Path(sys.argv[1] if len(sys.argv) > 1 else "_build/html")
root = Path(__file__).resolve().parents[1]
errors = []
if not (html / "index.html").exists():
    errors.append(f"{html}/index.html is missing")
for md in sorted((root / "notebooks").glob("[0-9][0-9]_*.md")):
    page = html / "notebooks" / f"{md.stem}.html"
    if not page.exists():
        errors.append(f"chapter page {page} is missing")
        continue
    text = page.read_text()
    colab = re.findall(r'https://colab\.research\.google\.com/github/[^"]+', text)
    if not colab or not all(link.endswith(f"notebooks/{md.stem}.ipynb") for link in colab):
        errors.append(f"{page.name}: Colab link should open notebooks/{md.stem}.ipynb, found {colab}")
    figures = re.findall(r'<img[^>]+src="[^"]*_images/[^"]+\.png"', text)  # executed plots, not the logos
    if not figures:
        errors.append(f"{page.name}: no figure was rendered (is MPLBACKEND set to a non-inline backend?)")
if errors:
    print("book check FAILED:\n- " + "\n- ".join(errors))
    sys.exit(1)
print(f"book check passed: {html}")
