"""Pydantic schemas of the HTTP API, one module per resource; kept apart from the ORM models."""
