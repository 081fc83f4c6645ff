"""backchat's domain code: everything but the HTTP wiring in app.py."""
