"""shopdesk: the customer-service bot of an online store."""

__version__ = "0.1.0"
