"""``python -m squeezer``: the same as the ``squeezer`` command."""

from squeezer.cli import main

if __name__ == "__main__":
    main()
