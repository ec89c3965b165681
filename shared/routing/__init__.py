"""Routing: which model answers a request that names a role (or none), in which order the
others are tried when it fails, and what each is called with. Offline: it calls no model."""
