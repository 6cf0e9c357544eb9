"""FastPath: the base of every fast path (see layerwise/autograd/dispatch.py for how one is
chosen). A fast path derives from ``FastPath`` and from the reference Function it replaces,
names the compiled kernels it needs, and says when it applies."""

from layerwise.autograd.function import Function
from layerwise.ops.fast.kernels import kernel


class FastPath:
    kernels = ()  # names in fast/kernels.py or fast/vecmath.py; none missing, or not available
    why = ""  # one line: what it measured against its reference, on which shapes

    @classmethod
    def reference(cls):
        """The reference Function this path replaces."""
        return next(c for c in cls.__mro__
                    if issubclass(c, Function) and not issubclass(c, FastPath))

    @classmethod
    def available(cls):
        """Whether its kernels compiled (numba installed and not turned off); asked once."""
        known = cls.__dict__.get("_available")
        if known is None:
            known = all(kernel(name) is not None for name in cls.kernels)
            cls._available = known
        return known

    @classmethod
    def supports(cls, *arrays, graph, **params):
        """Whether it computes this call correctly (dtype, layout, parameters)."""
        return True

    @classmethod
    def worth_it(cls, *arrays, graph, **params):
        """Whether it measured faster than the reference on inputs like these."""
        return True

    @classmethod
    def kernel(cls, name):
        """The compiled kernel ``name`` (one of ``kernels``)."""
        return kernel(name)
