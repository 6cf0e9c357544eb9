"""lw.compile: run a function once while recording its ops, then replay the record.

    step = lw.compile(train_step)   # train_step(x, y): zero_grad, forward, backward, step
    for x, y in loader:
        loss = step(x, y)

The first call with given argument shapes runs the function as usual and records, in order:
every op (its Function class, where its inputs come from, its non-tensor arguments), the
backward pass (the engine's order of nodes), and the calls marked replayable (optimizer
steps, zero_grad, gradient clipping, LR schedules; recording.py). Later calls replay that
record: each op's forward and backward run on the new data in the same order, with none of
the Python around them: no Module calls, argument checks, Tensor objects for intermediate
results or graph walk. The arithmetic is the same, so a replay gives the same bits as a
fresh run (the second call checks this, below). The idea is tinygrad's TinyJit and CUDA
graphs: what a small model spends outside its arithmetic.

What a replay repeats is only what was recorded, so the function must do the same thing
every call: Python branches on tensor values, tensors built inside it from outside data, and
state changed outside ops would be replayed as they were the first time. The second call
therefore runs the function both ways from the same state (parameters, gradients, optimizer
and schedule state, random generator) and compares everything they change; if anything
differs it keeps the plain run's result and raises, saying what differed. A change of
argument shapes, dtypes or requires_grad, of grad mode, or of a captured tensor's
requires_grad records afresh.
"""

import copy

from layerwise import backend
from layerwise.backend import xp
from layerwise.autograd import anomaly, grad_mode, recording
from layerwise.autograd.engine import (_accumulate_leaf, backward_pass, route_grads,
                                       run_backward, topological_order)
from layerwise.autograd.tensor import Tensor


def compile(fn, check=True):
    """``fn`` recorded on its first call per argument signature and replayed after that.

    ``fn`` takes Tensors (leaves, e.g. a batch) and hashable constants, and returns None, a
    Tensor or a tuple / list of Tensors. ``check=False`` skips the comparison on the second
    call (which costs one extra plain run)."""
    if not callable(fn):
        raise TypeError(f"lw.compile needs a function, got {type(fn).__name__}")
    return CompiledFunction(fn, check)


class CompiledFunction:
    def __init__(self, fn, check=True):
        self.fn, self.check = fn, check
        self._traces = {}  # argument signature -> _Trace
        self.__doc__, self.__name__ = fn.__doc__, getattr(fn, "__name__", "function")

    def __call__(self, *args):
        key = _signature(args)
        trace = self._traces.get(key)
        if trace is None or not trace.still_valid():
            return self._capture(key, args)
        if self.check and not trace.checked:
            return self._check(trace, args)
        return trace.replay(args)

    def _capture(self, key, args):
        if recording.active is not None:
            raise RuntimeError("lw.compile: a compiled function cannot call another while it is "
                               "being recorded; compile the outer one only")
        for i, a in enumerate(args):
            if isinstance(a, Tensor) and a._ctx is not None:
                raise ValueError(f"lw.compile: argument {i} was computed with a graph "
                                 "(it has a grad_fn); pass a leaf, e.g. tensor.detach()")
        recorder = _Recorder(args)
        recording.active = recorder
        try:
            result = self.fn(*args)
        finally:
            recording.active = None
        self._traces[key] = recorder.finish(result)
        return result

    def _check(self, trace, args):
        before = _State(trace)
        plain = self.fn(*args)
        plain_state = _State(trace)
        plain_out = _arrays(plain)
        before.restore()
        replayed = trace.replay(args)
        differences = plain_state.differences(_State(trace))
        if not _same(plain_out, _arrays(replayed)):
            differences.insert(0, "the returned tensors")
        if differences:
            plain_state.restore()  # leave the state as the plain run made it
            raise RuntimeError(
                f"lw.compile: replaying {self.__name__} did not reproduce running it: "
                f"{', '.join(differences[:4])} differ. The function must do the same ops on "
                "its arguments every call; data made inside it from outside values, Python "
                "branches on tensor values and state changed outside layerwise's ops are "
                "replayed as they were the first time. Pass such data as arguments, or do "
                "not compile this function.")
        trace.checked = True
        return replayed


def _signature(args):
    """What a record is valid for: grad mode and each argument's shape, dtype and
    requires_grad (Tensors) or value (hashable constants)."""
    parts = [grad_mode.state.enabled]
    for i, a in enumerate(args):
        if isinstance(a, Tensor):
            parts.append((a.data.shape, a.data.dtype, a.requires_grad))  # (dtypes hash)
        else:
            try:
                hash(a)
            except TypeError:
                raise TypeError(f"lw.compile: argument {i} is a {type(a).__name__}; compiled "
                                "functions take Tensors and hashable constants (wrap arrays "
                                "with lw.tensor)") from None
            parts.append(("const", a))
    return tuple(parts)


class _Op:
    __slots__ = ("cls", "inputs", "params", "needs", "has_views")

    def __init__(self, cls, inputs, params, needs):
        self.cls, self.inputs, self.params, self.needs = cls, inputs, params, needs
        self.has_views = any(_has_view(v) for v in params.values())


class _View:
    """An op's array argument that is a view of a keyed tensor's data (same address)."""
    __slots__ = ("key", "shape", "strides", "writeable")

    def __init__(self, key, shape, strides, writeable):
        self.key, self.shape, self.strides = key, shape, strides
        self.writeable = writeable

    def of(self, array):
        return xp.lib.stride_tricks.as_strided(array, self.shape, self.strides,
                                               writeable=self.writeable)


def _has_view(value):
    if isinstance(value, _View):
        return True
    return isinstance(value, (tuple, list)) and any(_has_view(v) for v in value)


class _Recorder:
    """Collects a _Trace while the function runs (the hooks are in recording.py).

    Every tensor an op reads gets a key: ("arg", i) for the i-th argument, ("op", j) for
    the output of op j, ("ext", n) for anything else (parameters, buffers, constants)."""

    def __init__(self, args):
        self.paused = False
        self.ops, self.events = [], []  # events: ("op", j), ("backward", ...), ("call", ...)
        self.keys, self.externals = {}, []
        self.alive = list(args)  # holds every keyed tensor, so that no id is reused
        self.node_of = {}  # id(ctx) -> op index
        self.arrays = {}  # data address -> (key, array) of every keyed tensor's data
        self.views = []  # _Views, for the ("view", n) keys
        for i, a in enumerate(args):
            if isinstance(a, Tensor):
                self.keys[id(a)] = ("arg", i)
                self._note_array(a.data, ("arg", i))

    def key(self, tensor):
        k = self.keys.get(id(tensor))
        if k is None:
            if tensor._ctx is not None:
                raise ValueError("lw.compile: the function uses a tensor computed with a graph "
                                 "outside it; compute it inside, or pass it detached")
            view = self._view_of(tensor.data)
            if view is not None:
                # a tensor wrapped around a view of another one's data (a function's Tensor(...)
                # of an argument's array): replayed as the same view of the new data
                k = ("view", len(self.views))
                self.views.append(view)
            else:
                k = ("ext", len(self.externals))
                self.externals.append(tensor)
            self.keys[id(tensor)] = k
            self.alive.append(tensor)
            self._note_array(tensor.data, k)
        return k

    def _note_array(self, array, key):
        """Remember which key's array this memory belongs to, so that an array an op gets as
        a plain argument (the targets of cross_entropy, an embedding's indices: views of a
        tensor's data) is replayed as the same view of the new data."""
        if hasattr(array, "ctypes"):
            self.arrays.setdefault(array.ctypes.data, (key, array))

    def _view_of(self, array):
        """A _View of the keyed tensor whose data starts where ``array`` does, else None."""
        found = self.arrays.get(array.ctypes.data) if hasattr(array, "ctypes") else None
        if found is None or found[1].dtype != array.dtype:
            return None
        return _View(found[0], array.shape, array.strides, array.flags.writeable)

    def op(self, cls, ctx, inputs, params, out, track):
        j = len(self.ops)
        keys = tuple(self.key(t) for t in inputs)
        self.ops.append(_Op(cls, keys, self._params(cls, params),
                            ctx.needs_input_grad if track else None))
        self.keys[id(out)] = ("op", j)
        self.alive.append(out)
        self._note_array(out.data, ("op", j))
        if track:
            self.node_of[id(ctx)] = j
        self.events.append(("op", j))

    def _params(self, cls, params):
        """The op's non-tensor arguments, with each array that views a keyed tensor's data
        replaced by a _View of it; other writable arrays cannot be replayed."""
        def convert(value):
            if isinstance(value, (tuple, list)):
                return type(value)(convert(v) for v in value)
            if not hasattr(value, "ctypes"):
                return value
            view = self._view_of(value)
            if view is not None:
                return view
            if not value.flags.writeable:
                return value  # a read-only constant, such as the cached causal mask
            raise NotImplementedError(
                f"lw.compile: {cls.__name__} got an array argument that is neither the data of "
                "one of the function's arguments or ops nor read-only (targets or indices of a "
                "tensor not passed in, a mask built in Python from data?); a replay would reuse "
                "the first call's. Pass such tensors as arguments, or do not compile this "
                "function")
        converted = {name: convert(value) for name, value in params.items()}
        return converted if any(_has_view(v) for v in converted.values()) else params

    def backward(self, root, gradient_given, retain_graph):
        if gradient_given or retain_graph:
            raise NotImplementedError("lw.compile replays backward() of a scalar only, without "
                                      "gradient= or retain_graph=")
        if any(t._retains_grad for t in self.alive):
            raise NotImplementedError("lw.compile does not replay retain_grad(): a replay makes "
                                      "no tensors for intermediate results")
        root_key = self.keys.get(id(root))
        if root_key is None or root_key[0] != "op":
            raise NotImplementedError("lw.compile: backward() must start from a result of the "
                                      "function's own ops")
        order = []  # the engine's walk, as keys: leaves ("ext" and "arg") and ("op", j)
        for entry in topological_order(root._graph_ref()):
            if entry._ctx is None:
                if self.key(entry)[0] == "view":
                    raise NotImplementedError("lw.compile: a tensor made inside the function "
                                              "requires grad; pass it as an argument")
                order.append(self.key(entry))
            elif id(entry._ctx) in self.node_of:
                order.append(("op", self.node_of[id(entry._ctx)]))
            else:
                raise NotImplementedError("lw.compile: backward() reaches ops it did not record")
        self.events.append(("backward", root_key, tuple(reversed(order))))

    def call(self, function, args, kwargs):
        self.events.append(("call", function, args, kwargs))

    def finish(self, result):
        outputs = _output_keys(result, self.keys)
        return _Trace(self.ops, self.events, self.externals, self.views, outputs)


def _output_keys(result, keys):
    """The keys of what the function returned, in its structure (None, key, or tuple/list)."""
    if result is None:
        return None
    if isinstance(result, Tensor):
        if id(result) not in keys:
            raise TypeError("lw.compile: the function returned a tensor made outside its ops "
                            "(lw.tensor(...) inside it?); it would be replayed unchanged")
        return _Out(keys[id(result)])
    if isinstance(result, (tuple, list)):
        return type(result)(_output_keys(r, keys) for r in result)
    raise TypeError(f"lw.compile: the function returned a {type(result).__name__}; return "
                    "Tensors (call .item() on them outside), or None")


class _Trace:
    def __init__(self, ops, events, externals, views, outputs):
        self.ops, self.events, self.externals, self.outputs = ops, events, externals, outputs
        self.views = views
        self.requires = [t.requires_grad for t in externals]
        self.checked = False
        self.drop_after = self._last_uses()

    def still_valid(self):
        """False once a captured tensor's requires_grad changed (the graph would differ)."""
        return all(t.requires_grad == r for t, r in zip(self.externals, self.requires))

    def _last_uses(self):
        """For each event, the op results no later event needs: a replay frees them there, so
        it holds no more memory than the plain run (which frees unreferenced results)."""
        last = {}

        def use(key, e):
            last[key] = e
            if key[0] == "view":  # a view needs the array it views
                use(self.views[key[1]].key, e)
        for e, event in enumerate(self.events):
            if event[0] == "op":
                for k in self.ops[event[1]].inputs + _view_keys(self.ops[event[1]].params):
                    use(k, e)
                last.setdefault(("op", event[1]), e)
            elif event[0] == "backward":
                use(event[1], e)
        for k in _flat_keys(self.outputs):
            use(k, len(self.events))  # returned: kept to the end
        drop = [[] for _ in self.events]
        for k, e in last.items():
            if k[0] == "op" and e < len(self.events):
                drop[e].append(k)
        return drop

    def replay(self, args):
        values = {("arg", i): a.data for i, a in enumerate(args) if isinstance(a, Tensor)}
        nodes = {}  # op index -> its Function instance, for backward
        for event, drop in zip(self.events, self.drop_after):
            kind = event[0]
            if kind == "op":
                j = event[1]
                op = self.ops[j]
                inputs = [self._value(k, values) for k in op.inputs]
                params = op.params
                if op.has_views:
                    params = {name: self._resolve(v, values) for name, v in params.items()}
                ctx = op.cls()
                if op.needs is not None:
                    ctx.needs_input_grad = op.needs
                    nodes[j] = ctx
                out = ctx.forward(*inputs, **params)
                if anomaly._enabled:
                    anomaly.check_finite(out, op.cls.__name__, "forward")
                values[("op", j)] = out
            elif kind == "backward":
                with backward_pass():  # a replayed backward runs queue_callback's callbacks
                    self._backward(event[1], event[2], values, nodes, args)
            else:
                _, function, call_args, kwargs = event
                function(*call_args, **kwargs)
            for k in drop:
                del values[k]
        return self._results(self.outputs, values, args)

    def _backward(self, root_key, order, values, nodes, args):
        """engine.backward's loop over a recorded order: the same gradients, summed in the
        same order, so the same bits."""
        grads = {root_key: xp.ones_like(values[root_key])}
        handed_out = set()
        for key in order:
            g = grads.pop(key, None)
            if key[0] != "op":  # a leaf: a parameter, or an argument that requires grad
                if g is not None:
                    _accumulate_leaf(self._tensor(key, args), g, handed_out)
                continue
            if g is None:
                continue
            ctx = nodes.pop(key[1])
            input_grads = run_backward(ctx, g, retain_graph=False)
            route_grads(grads, self.ops[key[1]].inputs, ctx.needs_input_grad, input_grads)
            ctx.__dict__.clear()

    def _value(self, key, values):
        """The array behind a key now: a captured tensor's current .data, a view of the new
        data, or an argument's or op result's array."""
        kind = key[0]
        if kind == "ext":
            return self.externals[key[1]].data
        if kind == "view":
            view = self.views[key[1]]
            return view.of(self._value(view.key, values))
        return values[key]

    def _resolve(self, value, values):
        if isinstance(value, _View):
            return value.of(self._value(value.key, values))
        if isinstance(value, (tuple, list)):
            return type(value)(self._resolve(v, values) for v in value)
        return value

    def _tensor(self, key, args):
        return self.externals[key[1]] if key[0] == "ext" else args[key[1]]

    def _results(self, out, values, args):
        if out is None:
            return None
        if isinstance(out, (tuple, list)):
            return type(out)(self._results(k, values, args) for k in out)
        if out.key[0] in ("op", "view"):
            return Tensor(self._value(out.key, values))
        return self._tensor(out.key, args)


def _view_keys(params):
    found = []

    def walk(value):
        if isinstance(value, _View):
            found.append(value.key)
        elif isinstance(value, (tuple, list)):
            for v in value:
                walk(v)
    for v in params.values():
        walk(v)
    return tuple(found)


class _Out:
    """A returned tensor's key, in the structure the function returned."""
    __slots__ = ("key",)

    def __init__(self, key):
        self.key = key


def _flat_keys(out):
    if out is None:
        return []
    if isinstance(out, (tuple, list)):
        return [k for part in out for k in _flat_keys(part)]
    return [out.key]


# --- the second call's comparison -----------------------------------------------------------


class _State:
    """Copies of what a call can change: captured tensors' data and gradients, the state of
    the objects whose replayable methods it called (optimizers, schedules), the generator."""

    def __init__(self, trace):
        self.tensors = [(t, t.data.copy(), None if t.grad is None else t.grad.data.copy())
                        for t in trace.externals]
        owners = {}
        for event in trace.events:
            if event[0] == "call" and event[2] and hasattr(event[2][0], "state_dict"):
                owners[id(event[2][0])] = event[2][0]
        self.owners = [(o, copy.deepcopy(o.state_dict())) for o in owners.values()]
        self.rng = backend.get_rng_state()

    def restore(self):
        for t, data, grad in self.tensors:
            if t.data.flags.writeable and t.data.shape == data.shape:
                t.data[...] = data  # in place: views and optimizer state keep pointing at it
            else:
                t.data = data.copy()
            t.grad = None if grad is None else Tensor(grad.copy())
        for owner, state in self.owners:
            owner.load_state_dict(copy.deepcopy(state))
        backend.set_rng_state(self.rng)

    def differences(self, other):
        found = []
        for (t, d1, g1), (_, d2, g2) in zip(self.tensors, other.tensors):
            if not _same(d1, d2) or not _same(g1, g2):
                found.append(f"a captured tensor of shape {tuple(t.shape)} (or its .grad)")
        for (owner, s1), (_, s2) in zip(self.owners, other.owners):
            if not _same(s1, s2):
                found.append(f"the state of {type(owner).__name__}")
        if not _same(self.rng, other.rng):
            found.append("the random generator's state")
        return found


def _arrays(value):
    if isinstance(value, Tensor):
        return value.data
    if isinstance(value, (tuple, list)):
        return [_arrays(v) for v in value]
    return value


def _same(a, b):
    """Equal to the bit (NaN equal to NaN), through dicts, lists, tuples and Tensors."""
    if isinstance(a, Tensor) or isinstance(b, Tensor):
        return isinstance(a, Tensor) and isinstance(b, Tensor) and _same(a.data, b.data)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return (isinstance(b, (list, tuple)) and len(a) == len(b)
                and all(_same(x, y) for x, y in zip(a, b)))
    if hasattr(a, "shape") and hasattr(a, "dtype"):
        return (hasattr(b, "shape") and a.shape == b.shape and a.dtype == b.dtype
                and bool(xp.array_equal(a, b, equal_nan=a.dtype.kind in "fc")))
    return a == b or (a != a and b != b)
