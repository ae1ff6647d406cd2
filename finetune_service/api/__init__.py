"""HTTP controllers. No business logic here: parse, call a service, shape the answer."""
