"""Errors shared by the command modules."""

from __future__ import annotations


class UsageError(Exception):
    """Bad arguments detected after parsing (exit code 2)."""
