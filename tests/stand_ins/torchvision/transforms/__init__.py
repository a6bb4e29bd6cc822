"""Import-only stand-in (see ../__init__.py)."""


def __getattr__(name):
    raise ImportError(f"torchvision stand-in: 'transforms.{name}' is not available (tests only)")
