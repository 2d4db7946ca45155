"""The approvals page is served self-contained, with a strict content security policy."""

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
    for path in ("/v1/remediations", "/v1/audit", "digest: p.digest"):
        assert path in page
