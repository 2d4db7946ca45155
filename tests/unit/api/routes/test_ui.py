"""The page is served self-contained, with a strict content security policy."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient


def test_the_page_is_self_contained_and_locked_down(client: TestClient) -> None:
    response = client.get("/ui")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    policy = response.headers["content-security-policy"]
    assert "default-src 'none'" in policy and "connect-src 'self'" in policy
    assert response.headers["x-content-type-options"] == "nosniff"
    page = response.text
    assert not re.search(r"(src|href)=[\"']?https?:", page)  # nothing from another origin
    assert "innerHTML" not in page  # data reaches the page as text only
    assert "sessionStorage" in page and "localStorage" not in page
    assert "eval(" not in page and "new Function" not in page  # the policy forbids both
    for path in ("/v1/remediations", "/v1/audit", "digest: p.digest", "/v1/breaches"):
        assert path in page
    for path in ("/chart", "/v1/incidents", "/v1/anomalies", "/v1/series"):
        assert path in page
    # the hooks a browser test drives the page by
    for hook in (
        "dataset.incidentId",
        "dataset.topSuspect",
        "dataset.proposalId",
        "createElementNS",
    ):
        assert hook in page
