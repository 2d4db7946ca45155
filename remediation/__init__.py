"""Remediation: playbooks, the approval state machine, Vault credentials, executor, audit chain."""
