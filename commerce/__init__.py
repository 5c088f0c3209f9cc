"""The store: tables, seeding, orders, stock and fraud services (used by tools and REST alike)."""
