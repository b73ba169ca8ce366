"""Hatchway agent: give a local HTTP app a public URL through your own Hatchway relay.

This package also holds ``hatchway.protocol``, the wire protocol the relay functions import, so
importing ``hatchway`` stays free of the agent's own dependencies.
"""

__version__ = "0.1.0"
