"""pytest plugin (entry point ``pytest11``): fixtures for squeezer plugin authors."""
