"""One module per command (group); cli.py registers them on the Typer app."""
