"""HTML pages and their HTMX fragments."""
