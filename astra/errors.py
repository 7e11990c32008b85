"""The errors astra raises on purpose, importable by every layer (the CLI prints them).

- :class:`UserError`: caused by the user's input (config, files, flags); ``astra`` prints
  its one-line message and exits with status 2.
- :class:`ConfigError` (a ``UserError`` and a ``ValueError``): a config file, key or value
  is wrong (:mod:`astra.config`).
- :class:`TrainingError`: a training run cannot continue (e.g. the loss stayed
  non-finite); ``astra pretrain`` / ``astra finetune`` report it as a ``UserError``.
"""

from __future__ import annotations


class UserError(Exception):
    """An error caused by the user's input (config, files, flags): printed as one line."""


class ConfigError(UserError, ValueError):
    """A config file, key or value is wrong; the message is one line naming it."""


class TrainingError(RuntimeError):
    """The run cannot continue (e.g. the loss stayed non-finite); the message says why."""
