"""Use cases. The only layer that converts between request Structs and table rows."""
