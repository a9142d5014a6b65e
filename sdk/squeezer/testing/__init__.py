"""Test helpers for squeezer and its plugin authors (also a pytest plugin: ``squeezer.testing.pytest_plugin``)."""
