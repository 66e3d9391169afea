"""medscribe-emulator: a local emulator of Amazon Connect Health's medical scribe streaming API."""

__version__ = "0.3.0"
__all__ = ["__version__"]
