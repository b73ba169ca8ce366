"""The agent's version: what it says in its hello and in ``hatchway --version``."""

__version__ = "0.1.0"
