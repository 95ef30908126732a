"""`tokenmdp`: the command line. Heavy imports stay inside commands so `--help` is instant."""

# Importing the command modules registers their commands on the app, training ones first in `--help`.
from cli import train  # noqa: F401

# isort: split
from cli import read  # noqa: F401
from cli.common import app

if __name__ == "__main__":
    app()
