"""Adapters from public/real datasets to canonical landing files (the landing contract in docs/contracts.md)."""
