"""The ``two_tower_model`` asset."""
