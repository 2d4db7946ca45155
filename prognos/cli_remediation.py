"""`prognos playbook …` and `prognos audit …`: playbook validation and the audit chain.

Commands read the configuration through ``prognos.cli._settings()`` (imported inside the command,
since ``prognos.cli`` imports this module).
"""

from __future__ import annotations

import typer

playbook_app = typer.Typer(help="Remediation playbooks (YAML, validated).", no_args_is_help=True)
audit_app = typer.Typer(help="The hash-chained audit log.", no_args_is_help=True)
