"""The console's HTTP face: HTML pages (``pages``), the JSON API (``api``), sessions and CSRF (``sessions``)."""
