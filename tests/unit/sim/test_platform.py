"""The simulated platform API: only the admin token acts, restarts reach the shop, bad input is a
4xx problem, and the playbook actions use it with the token from their environment."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests
from typer.testing import CliRunner

from core.clock import FixedClock, to_epoch
from prognos.cli import app
from remediation.actions import ACTIONS, platform_restart, platform_wait_healthy
from sim.platform import Platform, PlatformServer
from sim.shop import Fault, Shop

TOKEN = "admin-token-for-tests-0123456789"
NOW = datetime(2026, 1, 6, 10, 0, tzinfo=UTC)
DEMO_PLAYBOOKS = Path(__file__).resolve().parents[3] / "deploy" / "demo" / "playbooks"


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(NOW)


@pytest.fixture
def platform(clock: FixedClock) -> Platform:
    return Platform(Shop(1), clock)


@pytest.fixture
def server(platform: Platform) -> Iterator[PlatformServer]:
    with PlatformServer(platform, admin_token=TOKEN) as running:
        yield running


def call(
    server: PlatformServer, method: str, path: str, token: str | None = TOKEN, **kw: object
) -> requests.Response:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return requests.request(method, f"{server.url}{path}", headers=headers, timeout=10, **kw)  # type: ignore[arg-type]


def test_only_the_admin_token_gets_in_and_it_is_never_echoed(server: PlatformServer) -> None:
    assert server.url.startswith("http://127.0.0.1:")
    for token in (None, "wrong", TOKEN + "x", ""):
        response = call(server, "POST", "/v1/deployments/cart/restart", token=token)
        assert response.status_code == 401
        assert response.headers["Content-Type"] == "application/problem+json"
        assert response.json()["status"] == 401
        assert TOKEN not in response.text
    basic = requests.get(
        f"{server.url}/v1/deployments/cart", headers={"Authorization": f"Basic {TOKEN}"}, timeout=5
    )
    assert basic.status_code == 401
    assert server.platform.actions == [] and server.platform.shop.restarts["cart"] == []


def test_a_restart_clears_a_leaking_deployment(
    server: PlatformServer, platform: Platform, clock: FixedClock
) -> None:
    start = to_epoch(NOW)
    platform.shop.inject(Fault("leak", "orders", start))
    crossed = platform.shop.crossing("orders", "memory", start)
    assert crossed is not None
    clock.set(datetime.fromtimestamp(crossed + 630, UTC))  # between two steps
    sick = call(server, "GET", "/v1/deployments/orders").json()
    assert sick["healthy"] is False and sick["memory_bytes"] >= sick["memory_limit_bytes"]
    assert sick["replicas"] == 2 and sick["restarts"] == []

    response = call(server, "POST", "/v1/deployments/orders/restart")
    assert response.status_code == 200
    assert response.json() == {"deployment": "orders", "restarted_at": crossed + 630}
    well = call(server, "GET", "/v1/deployments/orders").json()
    assert well["healthy"] is True and well["memory_bytes"] < 0.7 * well["memory_limit_bytes"]
    assert well["restarts"] == [crossed + 630]
    assert platform.actions == [{"who": "admin", "what": "restart orders", "when": crossed + 630}]
    # The leak is still in the code: an hour later the pods are near their limit again.
    clock.advance(timedelta(minutes=70))
    assert call(server, "GET", "/v1/deployments/orders").json()["healthy"] is False


def test_scaling_checks_its_input(server: PlatformServer, platform: Platform) -> None:
    response = call(server, "POST", "/v1/deployments/cart/scale", json={"replicas": 3})
    assert response.status_code == 200 and response.json()["replicas"] == 3
    assert call(server, "GET", "/v1/deployments/cart").json()["replicas"] == 3
    assert platform.shop.pods("cart") == ["cart-0", "cart-1", "cart-2"]
    for body in ({"replicas": 0}, {"replicas": 21}, {"replicas": "3"}, {"replicas": 2.5}, {}, [3]):
        bad = call(server, "POST", "/v1/deployments/cart/scale", json=body)
        assert bad.status_code == 400, body
        assert bad.headers["Content-Type"] == "application/problem+json"
    not_json = call(server, "POST", "/v1/deployments/cart/scale", data=b"replicas=3")
    assert not_json.status_code == 400
    huge = call(server, "POST", "/v1/deployments/cart/scale", data=b"x" * (65 * 1024))
    assert huge.status_code == 413
    assert len(platform.actions) == 1


def test_unknown_deployments_and_routes_are_404(server: PlatformServer) -> None:
    for method, path in [
        ("GET", "/v1/deployments/checkout"),
        ("POST", "/v1/deployments/checkout/restart"),
        ("GET", "/v1/other"),
        ("GET", "/v1/deployments/cart/pods"),
    ]:
        response = call(server, method, path)
        assert response.status_code == 404, path
        assert response.json()["status"] == 404
    wrong_method = call(server, "GET", "/v1/deployments/cart/restart")
    assert wrong_method.status_code == 405 and wrong_method.headers["Allow"] == "POST"


def test_the_playbook_actions_act_with_the_token_from_their_environment(
    server: PlatformServer, platform: Platform, clock: FixedClock
) -> None:
    assert ACTIONS["platform_restart"] is platform_restart
    assert ACTIONS["platform_wait_healthy"] is platform_wait_healthy
    env = {"PLATFORM_TOKEN": TOKEN, "PLATFORM_URL": server.url}
    # An empty deployment means the proposal's target; an empty url means PLATFORM_URL.
    done = platform_restart({"deployment": "", "target": "cart", "url": ""}, env)
    assert done == {"deployment": "cart", "restarted_at": to_epoch(NOW)}
    status = platform_wait_healthy({"deployment": "cart", "url": server.url}, env)
    assert status["healthy"] is True and status["restarts"] == [to_epoch(NOW)]

    with pytest.raises(RuntimeError) as denied:
        platform_restart({"deployment": "cart"}, {**env, "PLATFORM_TOKEN": "stolen-guess"})
    assert "401" in str(denied.value) and "'cart'" in str(denied.value)
    assert "stolen-guess" not in str(denied.value) and TOKEN not in str(denied.value)
    with pytest.raises(PermissionError):
        platform_restart({"deployment": "cart", "url": server.url}, {})
    with pytest.raises(RuntimeError, match="404"):
        platform_restart({"deployment": "checkout"}, env)

    platform.shop.inject(Fault("latency", "payment", to_epoch(NOW) - 3 * 3_600))
    with pytest.raises(TimeoutError, match="'payment'"):
        platform_wait_healthy({"deployment": "payment", "timeout_s": 0.3, "interval_s": 0.1}, env)
    assert len(platform.actions) == 1  # only the one authorised restart


@pytest.mark.parametrize("folder", ["playbooks", "playbooks-prometheus"])
def test_the_demo_playbooks_validate(folder: str) -> None:
    result = CliRunner().invoke(app, ["playbook", "validate", str(DEMO_PLAYBOOKS.parent / folder)])
    assert result.exit_code == 0, result.output
    assert "restart-service.yaml: ok (restart-service v1" in result.output
    assert "restart-on-errors.yaml: ok (restart-on-errors v1" in result.output


def test_metrics_show_every_pod_now_without_a_token(
    server: PlatformServer, platform: Platform, clock: FixedClock
) -> None:
    response = call(server, "GET", "/metrics", token=None)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    from prometheus_client.parser import text_string_to_metric_families

    families = {f.name: f for f in text_string_to_metric_families(response.text)}
    memory = families["shop_memory_bytes"]
    pods = {(s.labels["service"], s.labels["pod"]): s.value for s in memory.samples}
    assert len(pods) == 8 and ("cart", "cart-0") in pods
    assert {"shop_latency_p99_seconds", "shop_cpu_ratio", "shop_errors_ratio"} <= set(families)
    # What a scrape sees follows the platform's clock: a leak shows, a restart clears it.
    start = to_epoch(NOW)
    platform.shop.inject(Fault("leak", "cart", start))
    clock.advance(timedelta(minutes=60))
    before = _cart_memory(call(server, "GET", "/metrics", token=None).text)
    platform.restart("cart")
    after = _cart_memory(call(server, "GET", "/metrics", token=None).text)
    assert before > 0.8e9 > 0.7e9 > after
    assert TOKEN not in response.text


def _cart_memory(text: str) -> float:
    (line,) = [x for x in text.splitlines() if x.startswith('shop_memory_bytes{service="cart"')]
    return float(line.rsplit(" ", 1)[1])
