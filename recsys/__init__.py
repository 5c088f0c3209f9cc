"""Recommendations (issue 6)."""
