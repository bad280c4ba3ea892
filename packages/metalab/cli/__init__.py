"""The ``metalab`` command line: thin wrappers that parse, call the library, print."""

from metalab.cli.main import cli, main

__all__ = ["cli", "main"]
