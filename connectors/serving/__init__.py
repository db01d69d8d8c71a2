"""Serving the materialized views to analysts: REST (``app.py``), with JWT authentication and
tenant isolation (``auth.py``), rate limits (``ratelimit.py``), reads generated from the view
definitions (``query.py``) against each store (``stores.py``)."""
