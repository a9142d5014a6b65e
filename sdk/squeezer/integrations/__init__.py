"""Compression inside third-party trainers, built on :class:`squeezer.session.Compression`.

- :mod:`squeezer.integrations.lightning`: ``SqueezerCallback`` for a Lightning ``Trainer``
  (``pip install squeezer[lightning]``);
- :mod:`squeezer.integrations.transformers`: ``SqueezerTrainerCallback`` for the Hugging Face
  ``Trainer`` (``pip install squeezer[transformers]``).

Importing ``squeezer`` or this package imports neither library; each submodule imports its own.
"""
