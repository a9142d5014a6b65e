"""Built-in plugin: LSQ learned-step weight quantization and a min-max observer baseline."""

from squeezer import hookimpl
from squeezer.registry import Registry
from squeezer_lsq.config import LsqQuantizer, MinMaxQuantizer


@hookimpl
def squeezer_register_quantizers(registry: Registry) -> None:
    registry.add_quantizer("lsq", LsqQuantizer)
    registry.add_quantizer("minmax", MinMaxQuantizer)
