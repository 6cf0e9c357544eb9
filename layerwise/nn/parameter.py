"""Parameter: a Tensor that a Module owns and an optimizer updates.

It is found by walking a Module's attributes (see module.py), so being a Parameter is the
whole registration: ``self.weight = Parameter(...)`` is enough.
"""

from layerwise import backend
from layerwise.backend import xp
from layerwise.autograd.tensor import Tensor


class Parameter(Tensor):
    """``Parameter(tensor_or_array, requires_grad=True)``: shares the data of a Tensor or array.

    Built from another Tensor it takes that tensor's data (not its graph), as in PyTorch;
    Python numbers and lists go through ``lw.tensor`` so floats get the default float dtype.
    """

    def __init__(self, data=None, requires_grad=True):
        if data is None:
            array = xp.empty((0,), dtype=backend.default_float())
        elif isinstance(data, Tensor):
            array = data.data
        elif hasattr(data, "dtype") and hasattr(data, "shape"):
            array = xp.asarray(data)
        else:
            from layerwise.ops.creation import tensor

            array = tensor(data).data
        if requires_grad and not backend.is_floating(array.dtype):
            raise TypeError(
                f"a Parameter that requires grad must be floating point, got dtype {array.dtype}; "
                "pass a float tensor or requires_grad=False"
            )
        super().__init__(array, requires_grad=requires_grad)

    def __repr__(self):
        return "Parameter containing:\n" + super().__repr__()
