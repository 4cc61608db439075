"""HTTP controllers, one module per domain (recommendations, items, events, admin, health)."""
