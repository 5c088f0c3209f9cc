"""Retrieval over product and policy documents (issue 4)."""
