"""What every presenter shares (the CLI, the web pages, the fleet pages): how values read as
text and JSON (`format`) and how results are drawn (`figures`).

Presenters sit above the analyses and below nothing: the CLI and the web both import from here,
never from each other, so the CLI's `--format json` and the web's `/api/...` give the same rows.
"""
