"""lpr-edge: licence-plate recognition for patrol cars."""

__version__ = "0.1.0"
