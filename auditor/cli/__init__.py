"""The `auditor` command line: thin Typer commands that parse options and make one call each."""
