"""msgspec Structs for request and response bodies, shared by `api` (which speaks them) and
`services` (the one place that converts them to and from table rows)."""
