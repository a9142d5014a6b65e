import os

from hypothesis import HealthCheck, settings

# What happens to be installed must not leak into a run: only squeezer's own plugins load.
os.environ["SQUEEZER_DISABLE_PLUGIN_AUTOLOAD"] = "1"
# pytest-xdist already runs one worker per core: one torch thread each avoids oversubscription
# (set before torch is first imported; subprocesses inherit it).
os.environ.setdefault("OMP_NUM_THREADS", "1")

settings.register_profile("default", max_examples=40, deadline=None)
settings.register_profile(
    "ci", max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))
