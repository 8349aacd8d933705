"""The one private name of Python's argparse this project relies on."""

from __future__ import annotations

from argparse import ArgumentParser


def option_strings(parser: ArgumentParser) -> list[str]:
    """Every option string a parser accepts (``--trainer.max_epochs``...), from its ``_actions``: argparse
    has no public list of them. An empty list where the attribute is gone (the hint is then skipped)."""
    return [option for action in getattr(parser, "_actions", []) for option in action.option_strings]
