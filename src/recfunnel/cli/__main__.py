"""`python -m recfunnel.cli`: the same program as the `recfunnel` command."""

from recfunnel.cli import app

app(prog_name="recfunnel")
