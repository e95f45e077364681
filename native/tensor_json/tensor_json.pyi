"""JSON tensors of the model service decoded straight into a float32 buffer, GIL released.

``out`` is a writable, C-contiguous float32 buffer (a numpy array) the call fills from its
start; the caller must not touch it from another thread during the call. Every function returns
None for a body it does not take (the caller's checked path then decides); it raises only for an
unusable ``out``.
"""

from collections.abc import Buffer

def instances(body: bytes, out: Buffer, /) -> tuple[int, int] | None:
    """``{"instances": [[numbers], ...]}`` -> (rows, columns), rectangular, float32 range."""

def infer(body: bytes, out: Buffer, /) -> tuple[bytes, int] | None:
    """An inference request with one input tensor whose ``data`` is a flat array of numbers ->
    (the request as JSON without that ``data``, how many values it held)."""
