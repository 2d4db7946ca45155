"""`prognos playbook …` and `prognos audit …`: playbook validation, the audit chain and its anchor.

Commands read the configuration through ``prognos.cli._settings()`` (imported inside the command,
since ``prognos.cli`` imports this module).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

    from core.settings import Settings

playbook_app = typer.Typer(help="Remediation playbooks (YAML, validated).", no_args_is_help=True)
audit_app = typer.Typer(help="The hash-chained audit log.", no_args_is_help=True)


@playbook_app.command("validate")
def playbook_validate(
    files: Annotated[
        list[Path], typer.Argument(help="playbook files or folders of *.yaml", show_default=False)
    ],
) -> None:
    """Check playbooks; print `FILE:LINE: field: what is wrong` and exit 2 on any problem."""
    from prognos.cli import console, err
    from remediation.playbooks import check_file, playbook_files

    paths: list[Path] = []
    for item in files:
        paths.extend(playbook_files(item) if item.is_dir() else [item])
    failed = 0
    for path in paths:
        result = check_file(path)
        if result.playbook is None:
            failed += 1
            for problem in result.problems:
                err.print(problem, markup=False, highlight=False, soft_wrap=True)
        else:
            pb = result.playbook
            console.print(
                f"{path}: ok ({pb.name} v{pb.version}, {len(pb.steps)} steps, risk {pb.risk})",
                markup=False,
                highlight=False,
                soft_wrap=True,
            )
    if not paths:
        err.print("no playbook files given", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(2)
    if failed:
        raise typer.Exit(2)


@playbook_app.command("list")
def playbook_list() -> None:
    """The playbooks loaded from remediation.playbooks_dir."""
    from prognos.cli import _settings, console
    from remediation.playbooks import load_playbooks

    settings = _settings()
    directory = settings.remediation.playbooks_dir
    playbooks = load_playbooks(directory)
    if not playbooks:
        console.print(f"no playbooks in {directory}", markup=False, highlight=False, soft_wrap=True)
        return
    for name, pb in sorted(playbooks.items()):
        approval = pb.approval
        console.print(
            f"{name} v{pb.version}  risk={pb.risk}  kinds={','.join(pb.match.kinds)}  "
            f"services={','.join(pb.match.services)}  steps={len(pb.steps)}  "
            f"quorum={approval.quorum} ({'/'.join(approval.roles)})  "
            f"vault={'yes' if pb.vault else 'no'}",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
        if pb.description:
            console.print(
                f"    {pb.description.strip()}", markup=False, highlight=False, soft_wrap=True
            )


def _sessions() -> tuple[Settings, sessionmaker[Session]]:
    from core.database import create_engine, migrate, session_factory
    from prognos.cli import _settings

    settings = _settings()
    engine = create_engine(settings.database_url)
    migrate(engine)
    return settings, session_factory(engine)


@audit_app.command("verify")
def audit_verify(
    checkpoint: Annotated[
        Path | None,
        typer.Option(help="the anchor file (default: remediation.audit_checkpoint)"),
    ] = None,
) -> None:
    """Check the hash chain and its anchored head; exit 1 if anything was tampered with."""
    from prognos.cli import console, err
    from remediation import audit

    settings, sessions = _sessions()
    anchor = checkpoint or audit.checkpoint_for(settings)
    with sessions() as session:
        result = audit.verify(session, anchor)
    if result.ok:
        console.print(result.summary(), markup=False, highlight=False, soft_wrap=True)
        if result.unanchored:
            console.print(f"{result.unanchored} newest entries are not anchored yet", markup=False)
        return
    err.print(result.summary(), markup=False, highlight=False, soft_wrap=True)
    for problem in result.problems:
        err.print(f"  {problem}", markup=False, highlight=False, soft_wrap=True)
    raise typer.Exit(1)


@audit_app.command("show")
def audit_show(
    subject: Annotated[str | None, typer.Option(help="e.g. proposal:12")] = None,
    after: Annotated[int | None, typer.Option(help="entries after this sequence number")] = None,
    limit: Annotated[int, typer.Option(min=1, max=10000)] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object per line")] = False,
) -> None:
    """Print audit entries in chain order."""
    from prognos.cli import console
    from remediation import audit

    _, sessions = _sessions()
    with sessions() as session:
        entries = audit.entries(session, subject=subject, after=after, limit=limit)
    for entry in entries:
        if as_json:
            line = json.dumps(
                {
                    "seq": entry.seq,
                    "ts": audit.format_ts(entry.ts),
                    "actor": entry.actor,
                    "action": entry.action,
                    "subject": entry.subject,
                    "data": entry.data,
                    "hash": entry.hash,
                },
                sort_keys=True,
            )
        else:
            data = json.dumps(entry.data, sort_keys=True, separators=(",", ":"))
            line = (
                f"{entry.seq:>6}  {audit.format_ts(entry.ts)}  {entry.actor}  {entry.action}  "
                f"{entry.subject}  {data}  {entry.hash[:12]}"
            )
        console.print(line, markup=False, highlight=False, soft_wrap=True)


@audit_app.command("reanchor")
def audit_reanchor(
    reason: Annotated[
        str, typer.Option(help="why, e.g. 'restored the backup of 2026-11-29 after disk loss'")
    ],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="do not ask for confirmation")] = False,
    actor: Annotated[
        str | None, typer.Option(help="who re-anchors (default: cli:<login name>)")
    ] = None,
    checkpoint: Annotated[
        Path | None,
        typer.Option(help="the anchor file (default: remediation.audit_checkpoint)"),
    ] = None,
) -> None:
    """Admin: move the audit anchor back to the chain's head after restoring an older backup.

    Refused when the chain itself is damaged or already agrees with its anchor. The re-anchoring
    is an entry of the chain: who, why, the old anchor and the head it now points at."""
    import getpass

    from prognos.cli import console, err
    from remediation import audit

    settings, sessions = _sessions()
    anchor = checkpoint or audit.checkpoint_for(settings)
    with sessions() as session:
        old, head = audit.reanchor_plan(session, anchor)
    was = "no anchor" if old is None else f"entry {old.seq} ({old.hash[:12]})"
    err.print(
        f"The anchor at {anchor} points at {was}; the chain in the database ends at entry "
        f"{head.seq} ({head.hash[:12]}). Re-anchoring accepts that chain as the truth.",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
    if not yes and not typer.confirm("Re-anchor the audit chain?", err=True):
        err.print("nothing changed", markup=False)
        raise typer.Exit(1)
    with sessions() as session:
        done = audit.reanchor(
            session, anchor, actor=actor or f"cli:{getpass.getuser()}", reason=reason
        )
    console.print(
        f"re-anchored: entry {done.entry.seq} ({done.entry.action}) records it; the anchor now "
        f"points at entry {done.entry.seq}",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
