"""The in-car service: cameras to hits, GPS, state files, health and the maintenance commands."""
