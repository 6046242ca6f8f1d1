"""Real int8 inference on CPU: ``to_int8``. It lives in ``kdlite.quant.int8``; this name is kept for old imports."""

from .quant.int8 import to_int8

__all__ = ["to_int8"]
