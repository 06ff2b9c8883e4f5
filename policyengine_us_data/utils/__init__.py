"""Small shared helpers (atomic writes)."""
