"""Write the repository URL of ``_config.yml`` (``repository: url:``), the one place it is kept, into every chapter's
Colab install cell (``make sync`` runs this; the Colab buttons read ``_config.yml`` themselves)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
INSTALL = re.compile(r'(url = "kdlite\[data\] @ git\+)([^"]+)(")')


def repository_url(config: Path = ROOT / "_config.yml") -> str:
    match = re.search(r"^repository:\s*\n(?:\s+.*\n)*?\s+url:\s*(\S+)", config.read_text(), re.M)
    if match is None:
        raise SystemExit(f"{config}: no repository: url: entry")
    return match[1]


def main() -> int:
    url = repository_url()
    for md in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.md")):
        text = md.read_text()
        new = INSTALL.sub(lambda m: m[1] + url + m[3], text)
        if new != text:
            md.write_text(new)
            print(f"{md.name}: install from {url}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
