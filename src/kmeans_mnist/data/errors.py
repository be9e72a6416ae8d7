"""DatasetError in a module of its own, so that the readers of single files (images.py) can raise
it without importing datasets.py, which imports them: no import circle."""


class DatasetError(ValueError):
    """A problem with the user's data or data options; str() is one line meant for the user."""
