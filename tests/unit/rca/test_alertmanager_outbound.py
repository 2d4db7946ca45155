"""What Prognos tells Alertmanager: labels that route (valid names, reserved ones left out,
Prognos' own winning), and what is remembered between cycles (re-sent when changed, resolved
when gone, a new alert when a resolved one warns again or its labels change)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy.orm import Session, sessionmaker

from rca.alertmanager import outbound
from rca.alertmanager.tables import SentAlertRow
from rca.breaches import BreachWarning

NOW = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
PUBLIC = "https://prognos.example"


def _warning(**labels: str) -> BreachWarning:
    t = int(NOW.timestamp())
    return BreachWarning(
        series_id=7,
        service="cart",
        target="memory",
        labels={"service": "cart", **labels},
        threshold=1e9,
        direction="above",
        probability=0.83,
        eta=t + 24 * 60,
        ts=t,
        since=t - 120,
    )


def test_breach_labels_route_like_prometheus_alerts() -> None:
    alert = outbound.breach_alert(
        _warning(**{"__name__": "mem", "k8s.pod": "cart-0", "severity": "low", "1st": "x"}),
        public_url=PUBLIC,
        severity="warning",
    )
    assert alert.labels == {
        "alertname": "PrognosBreachPredicted",
        "severity": "warning",  # Prognos' own wins over the series'
        "service": "cart",
        "target": "memory",
        "k8s_pod": "cart-0",
        "_1st": "x",
    }
    assert alert.annotations["eta"] == "2026-01-05T12:24:00Z"
    assert "at 2026-01-05T12:24:00Z, probability 83%" in alert.annotations["description"]
    assert alert.starts_at == NOW - timedelta(minutes=2)
    assert alert.generator_url == f"{PUBLIC}/ui?series=7#series"


def _rows(sessions: sessionmaker[Session]) -> dict[str, SentAlertRow]:
    with sessions() as session:
        return {r.key: r for r in session.query(SentAlertRow)}


def test_what_was_sent_is_remembered_resent_and_resolved(sessions: sessionmaker[Session]) -> None:
    alert = outbound.breach_alert(_warning(pod="cart-0"), public_url=PUBLIC, severity="warning")
    with sessions() as session:
        outbound.remember(session, [alert], now=NOW)
        outbound.mark_sent(
            session, outbound.due(session, now=NOW, resend_every=timedelta(minutes=1)), now=NOW
        )
        session.commit()
        # Within the cadence and unchanged: nothing due; a changed annotation is due at once.
        outbound.remember(session, [alert], now=NOW + timedelta(seconds=10))
        assert (
            outbound.due(
                session, now=NOW + timedelta(seconds=10), resend_every=timedelta(minutes=1)
            )
            == []
        )
        changed = outbound.Alert(
            alert.key,
            alert.labels,
            {**alert.annotations, "probability": "0.91"},
            alert.generator_url,
            alert.starts_at,
        )
        outbound.remember(session, [changed], now=NOW + timedelta(seconds=20))
        assert [
            r.key
            for r in outbound.due(
                session, now=NOW + timedelta(seconds=20), resend_every=timedelta(minutes=1)
            )
        ] == ["breach:7"]
        # Gone: resolved now, due, and its payload ends then.
        outbound.remember(session, [], now=NOW + timedelta(seconds=30))
        (row,) = outbound.due(
            session, now=NOW + timedelta(seconds=30), resend_every=timedelta(minutes=1)
        )
        assert row.status == "resolved"
        (body,) = outbound.payload(
            [row], now=NOW + timedelta(seconds=30), valid_for=timedelta(minutes=4)
        )
        assert body["endsAt"] == "2026-01-05T12:00:30Z"
        # Warning again before the resolution was delivered: firing again, a new start.
        again = outbound.breach_alert(_warning(pod="cart-0"), public_url=PUBLIC, severity="warning")
        outbound.remember(session, [again], now=NOW + timedelta(seconds=40))
        (row,) = outbound.due(
            session, now=NOW + timedelta(seconds=40), resend_every=timedelta(minutes=1)
        )
        assert (row.status, row.ends_at) == ("firing", None)
        (body,) = outbound.payload(
            [row], now=NOW + timedelta(seconds=40), valid_for=timedelta(minutes=4)
        )
        assert body["endsAt"] == "2026-01-05T12:04:40Z"
        session.commit()


def test_new_labels_end_the_old_alert(sessions: sessionmaker[Session]) -> None:
    before = outbound.breach_alert(_warning(pod="cart-0"), public_url=PUBLIC, severity="warning")
    after = outbound.breach_alert(_warning(pod="cart-1"), public_url=PUBLIC, severity="warning")
    with sessions() as session:
        outbound.remember(session, [before], now=NOW)
        outbound.remember(session, [after], now=NOW + timedelta(minutes=1))
        session.commit()
    rows = _rows(sessions)
    old = next(r for k, r in rows.items() if k.startswith("breach:7@"))
    assert (old.status, old.labels["pod"]) == ("resolved", "cart-0")
    assert (rows["breach:7"].status, rows["breach:7"].labels["pod"]) == ("firing", "cart-1")
