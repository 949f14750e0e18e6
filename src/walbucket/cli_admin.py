"""The edge for the commands people run by hand (inspection, checks, repair): parse, call a service, render.

Like cli.py, it may print; unlike the push/get fast path it may be slow to import. cli.py registers these.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from .settings import Settings

__all__ = ["ADMIN_COMMANDS", "add_admin_commands"]

# Each command: (parsed arguments, settings) -> (the one log line, or "" for none; exit code).
ADMIN_COMMANDS: dict[str, Callable[[argparse.Namespace, Settings], tuple[str, int]]] = {}


def add_admin_commands(commands: argparse._SubParsersAction[Any], common: argparse.ArgumentParser) -> None:
    """Add the admin commands' parsers to the main parser's subcommands."""
    del commands, common
