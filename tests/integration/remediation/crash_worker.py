"""A separate executor process for the crash test: `run ID` runs one execution (the test
kills it mid-step), `recover` is the restart that cleans up after it. Configured by a JSON file.
"""

from __future__ import annotations

import json
import sys
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from pydantic import SecretStr

from core.database import create_engine, session_factory
from core.settings import RemediationSettings, VaultSettings
from remediation.executor import Executor
from remediation.playbooks import Playbook
from remediation.vault import CredentialBroker


def main() -> None:
    config = json.loads(Path(sys.argv[1]).read_text())
    command = sys.argv[2]
    engine = create_engine(config["db_url"])
    book = Playbook.model_validate(config["playbook"])
    broker = CredentialBroker(
        VaultSettings(
            url=config["vault_url"],
            role_id=config["role_id"],
            secret_id=SecretStr(config["secret_id"]),
        )
    )
    executor = Executor(
        session_factory(engine),
        broker,
        RemediationSettings(executor_lease=timedelta(seconds=config["lease_s"])),
        owner=f"{command}-process",
        playbooks={book.name: book},
        actions={},
    )
    if command == "run":
        executor.run(int(sys.argv[3]))
    else:
        print(json.dumps({"interrupted": executor.recover()}))


if __name__ == "__main__":
    main()
