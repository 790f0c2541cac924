"""The HTTP service: the app (search API, media routes, page), its server processes, and serving until stopped."""
