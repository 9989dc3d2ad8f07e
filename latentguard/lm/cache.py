"""A KV-cache layer that appends in place, and the sub-batch forward built on it.

transformers' ``DynamicLayer`` appends a step's keys and values with ``torch.cat``, which copies the
whole cache of every row at every forward: for a batch of 16 rows holding ~500 positions of a
135M model that is ~370 MB of copying per token, as much time as the forward itself.
:class:`GrowingLayer` keeps keys and values as prefix views of buffers with spare columns (the
capacity doubles when full), so a step writes only its new columns. Cropping keeps the views (a
shorter prefix); selecting rows or repacking (:meth:`latentguard.lm.DecodeState.compact`) makes new tensors,
which are copied into fresh buffers at the next append.

:func:`forward_rows` runs the model over some rows of the cache only (the rows that are fed), and
writes their new columns back; the other rows get zero columns, masked out by the caller.
"""

from __future__ import annotations

import torch
from transformers.cache_utils import DynamicLayer


class GrowingLayer(DynamicLayer):
    """A ``DynamicLayer`` whose appends write into preallocated buffers (see the module docstring)."""

    detached = False  # True during a sub-batch forward: keys/values are a gathered copy, appended by cat
    prefix: int | None = None  # during a forward over the first `prefix` rows only: append to those rows

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized or self.detached or self.keys is None or self.keys.numel() == 0:
            return super().update(key_states, value_states, *args, **kwargs)
        if self.prefix is None:
            self.append(key_states, value_states)
            return self.keys, self.values
        self.append(key_states, value_states, rows=slice(0, self.prefix))
        keys, values = self.kv()
        return keys[: self.prefix], values[: self.prefix]

    def kv(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The keys and values of an initialized layer."""
        assert self.keys is not None and self.values is not None, "the cache layer is not initialized"
        return self.keys, self.values

    def reserve(self, extra: int) -> None:
        """Make keys and values prefix views of buffers with room for ``extra`` more columns."""
        keys, values = self.kv()  # (B, heads, T, head_dim)
        buf = getattr(self, "_keys", None)
        width = keys.shape[2]
        linked = (buf is not None and buf.data_ptr() == keys.data_ptr() and buf.shape[:2] == keys.shape[:2]
                  and buf.stride() == keys.stride() and buf.shape[2] >= width + extra)
        if linked:
            return
        capacity = max(2 * (width + extra), 64)
        shape = (keys.shape[0], keys.shape[1], capacity, keys.shape[3])
        self._keys, self._values = keys.new_zeros(shape), values.new_zeros(shape)
        self._keys[:, :, :width] = keys
        self._values[:, :, :width] = values
        self.keys, self.values = self._keys[:, :, :width], self._values[:, :, :width]

    def append(self, key_states: torch.Tensor, value_states: torch.Tensor,
               rows: torch.Tensor | slice | None = None) -> None:
        """Write ``L`` new columns: for every row, or for ``rows`` only (zeros in the others)."""
        width, extra = self.kv()[0].shape[2], key_states.shape[2]
        self.reserve(extra)
        new_k, new_v = self._keys[:, :, width:width + extra], self._values[:, :, width:width + extra]
        if rows is None:
            new_k.copy_(key_states)
            new_v.copy_(value_states)
        else:
            new_k.zero_()
            new_v.zero_()
            new_k[rows] = key_states
            new_v[rows] = value_states
        self.keys, self.values = self._keys[:, :, :width + extra], self._values[:, :, :width + extra]


def use_growing_layers(cache) -> bool:
    """Turn the cache's ``DynamicLayer``s into :class:`GrowingLayer`s (in place); False when the
    cache has other kinds of layers (sliding windows...), which are then left as they are."""
    layers = getattr(cache, "layers", None)
    if not layers or any(type(layer) not in (DynamicLayer, GrowingLayer) for layer in layers):
        return False
    for layer in layers:
        layer.__class__ = GrowingLayer
    return True


def forward_rows(model, cache, index: torch.Tensor, **inputs):
    """``model(**inputs)`` over rows ``index`` of ``cache`` only (inputs are for those rows); the
    new columns are written back to those rows, zeros to the others. Needs growing layers."""
    layers = cache.layers
    rows = index.tolist()
    if rows == list(range(len(rows))):  # the first R rows: append in place, no copy of the cache
        for layer in layers:
            layer.prefix = len(rows)
        try:
            with torch.inference_mode():
                return model(**inputs, past_key_values=cache, use_cache=True)
        finally:
            for layer in layers:
                layer.prefix = None
    full = [(layer.keys, layer.values) for layer in layers]  # (B, heads, T, head_dim) views
    width = full[0][0].shape[2]
    for layer, (k, v) in zip(layers, full):
        layer.keys, layer.values, layer.detached = k[index], v[index], True
    try:
        with torch.inference_mode():
            out = model(**inputs, past_key_values=cache, use_cache=True)
    finally:
        sub = [(layer.keys, layer.values) for layer in layers]  # (R, heads, T + L, head_dim)
        for layer, (k, v) in zip(layers, full):
            layer.keys, layer.values, layer.detached = k, v, False
    with torch.inference_mode():
        for layer, (k, v) in zip(layers, sub):
            layer.append(k[:, :, width:], v[:, :, width:], rows=index)
    return out
