"""HTTP routes, one router per resource, gathered in `api.main.create_app`."""
