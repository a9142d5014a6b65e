"""The model suite that squeezer's default recipes are judged on (issue 16, item 1).

One module per model / data pair, each exposing factories a recipe can name (``make_loaders``
returns ``(train_loader, val_loader)``; ``make_splits`` the fixed train / validation / test
datasets); :mod:`benchmarks.suite.registry` lists them. Every data set is generated in code or
ships inside squeezer (the digits): nothing is downloaded. ``benchmarks/suite_run.py`` runs the
benchmark.
"""

from benchmarks.suite.registry import MEMBERS, REGISTRY, Member, get

__all__ = ["MEMBERS", "REGISTRY", "Member", "get"]
