"""The GitHub Actions workflow that publishes the book cannot run here, and actionlint cannot be installed offline
(its package downloads the binary when it builds): parse the YAML and check what the workflow must do."""

from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml")
WORKFLOW = Path(__file__).resolve().parents[1] / ".github" / "workflows" / "book.yml"


def test_the_book_workflow_tests_builds_and_deploys_to_pages():
    flow = yaml.safe_load(WORKFLOW.read_text())
    triggers = flow[True] if True in flow else flow["on"]  # YAML 1.1 reads the key `on` as True
    assert triggers["push"]["branches"] == ["main"] and "pull_request" in triggers
    assert flow["permissions"] == {"contents": "read", "pages": "write", "id-token": "write"}
    build, deploy = flow["jobs"]["build"], flow["jobs"]["deploy"]
    runs = [s.get("run", "") for s in build["steps"]]
    uses = [s.get("uses", "").split("@")[0] for s in build["steps"]]
    assert "make test" in runs and any("KDLITE_SCALE=cpu make book" in r for r in runs)
    assert runs.index("make test") < next(i for i, r in enumerate(runs) if "make book" in r)
    assert "actions/checkout" in uses and "actions/upload-pages-artifact" in uses
    artifact = next(s for s in build["steps"] if s.get("uses", "").startswith("actions/upload-pages-artifact"))
    assert artifact["with"]["path"] == "_build/html"
    assert deploy["needs"] == "build" and deploy["environment"]["name"] == "github-pages"
    assert deploy["steps"][0]["uses"].startswith("actions/deploy-pages@")
    for job in flow["jobs"].values():
        assert all(("uses" in s) != ("run" in s) for s in job["steps"]), "a step has both or neither of uses/run"
