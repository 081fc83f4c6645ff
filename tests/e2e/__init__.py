"""End-to-end tests: the real local stack (moto server, chalice local, page server) over HTTP."""
