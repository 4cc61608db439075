"""The ``two_tower_model`` asset (issue 4)."""
