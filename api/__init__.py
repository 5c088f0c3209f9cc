"""The doors: REST and WebSocket routers, one module per audience."""
