"""GX contract checks (being written)."""

gx_checks: list = []
