"""Sub-commands that live in their own modules; each has ``register(subparsers)``."""
