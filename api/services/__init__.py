"""Business logic behind the routes: keyword-only functions taking a session, raising APIError."""
