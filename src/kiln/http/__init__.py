"""HTTP: the RSGI application, the REST adapter and problem responses."""
