"""Incidents over HTTP: grouped alarms with their root-cause report (JSON, Markdown, HTML)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel

from api.deps import Offset, RowId, SessionDep, UtcTime, Viewer
from core.errors import ErrorKind, PrognosError
from rca.incidents import get_incident as find_incident
from rca.incidents import list_incidents
from rca.tables import IncidentRow

router = APIRouter(prefix="/v1", tags=["incidents"])


class IncidentNotFound(PrognosError):
    code = "incident_not_found"
    kind = ErrorKind.NOT_FOUND


class IncidentRead(BaseModel):
    id: int
    status: str
    opened_at: datetime
    updated_at: datetime
    last_alarm_at: datetime
    closed_at: datetime | None
    services: list[str]
    series: list[int]
    symptom: str
    top_suspect: str | None
    report: dict[str, Any] | None


def _read(row: IncidentRow, *, with_report: bool) -> IncidentRead:
    return IncidentRead(
        id=row.id,
        status=row.status,
        opened_at=row.opened_at,
        updated_at=row.updated_at,
        last_alarm_at=row.last_alarm_at,
        closed_at=row.closed_at,
        services=list(row.services),
        series=list(row.series),
        symptom=row.symptom,
        top_suspect=row.top_suspect,
        report=row.report if with_report else None,
    )


def _get(session: Any, incident_id: int) -> IncidentRow:
    row = find_incident(session, incident_id)
    if row is None:
        raise IncidentNotFound(f"no incident {incident_id}")
    return row


@router.get(
    "/incidents",
    response_model=list[IncidentRead],
    summary="Incidents, newest first (reports left out: GET one to read it)",
)
def get_incidents(
    _: Viewer,
    session: SessionDep,
    status: Literal["open", "closed"] | None = None,
    service: str | None = None,
    since: UtcTime | None = None,
    until: UtcTime | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Annotated[Offset, Query()] = 0,
) -> list[IncidentRead]:
    rows = list_incidents(
        session,
        status=status,
        service=service,
        since=since,
        until=until,
        limit=limit,
        offset=offset,
    )
    return [_read(r, with_report=False) for r in rows]


@router.get("/incidents/{incident_id}", response_model=IncidentRead, summary="One incident")
def get_incident(incident_id: RowId, _: Viewer, session: SessionDep) -> IncidentRead:
    return _read(_get(session, incident_id), with_report=True)


@router.get("/incidents/{incident_id}/report.md", summary="The report as Markdown")
def incident_markdown(incident_id: RowId, _: Viewer, session: SessionDep) -> Response:
    row = _get(session, incident_id)
    return Response(row.markdown or "", media_type="text/markdown; charset=utf-8")


@router.get("/incidents/{incident_id}/report.html", summary="The report as a page")
def incident_html(incident_id: RowId, _: Viewer, session: SessionDep) -> Response:
    row = _get(session, incident_id)
    return Response(
        row.html or "",
        media_type="text/html; charset=utf-8",
        headers={
            "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'",
            "X-Content-Type-Options": "nosniff",
        },
    )
