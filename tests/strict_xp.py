"""An array namespace that behaves like CuPy where host/device mix-ups show, on NumPy.

    from tests.strict_xp import strict
    a = strict.asarray(np.ones(3))        # host -> "device", as cupy.asarray
    np.asarray(a)                         # TypeError: implicit conversion to NumPy
    float(a.sum())                        # TypeError: use .item()
    np.exp(a)                             # TypeError: a NumPy function on a device array
    a + np.ones(3)                        # TypeError: a host array in device arithmetic
    a.get()                               # the NumPy array back, as CuPy's .get()

Every array the namespace makes is a ``DeviceArray``: it holds a NumPy
array and refuses every way CuPy refuses to mix with the host (and
``float()``/``int()`` of an array, which CuPy allows with a hidden
synchronisation: the scripts say ``.item()``). So code written against
``xp`` that runs here without a TypeError moves data between host and
device only where it says so (``xp.asarray`` in, ``to_numpy``/``.get()``
out).
"""

from __future__ import annotations

import operator

import numpy as np

HOST_IN = {"asarray", "array", "asanyarray", "ascontiguousarray"}  # host -> device, explicitly


class DeviceArray:
    __slots__ = ("_a",)
    __array_priority__ = 10_000

    def __init__(self, array):
        self._a = array

    # -- crossing to the host: only explicitly --------------------------------
    def get(self):
        return np.array(self._a, copy=True)

    def item(self):
        return self._a.item()

    def tolist(self):
        return self._a.tolist()

    def __array__(self, *args, **kwargs):
        raise TypeError("implicit conversion of a device array to NumPy (use .get())")

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        raise TypeError(f"NumPy's {ufunc.__name__} on a device array (use xp.{ufunc.__name__})")

    def __array_function__(self, func, types, args, kwargs):
        raise TypeError(f"NumPy's {func.__name__} on a device array (use xp.{func.__name__})")

    def __float__(self):
        raise TypeError("float() of a device array (use .item())")

    def __int__(self):
        raise TypeError("int() of a device array (use .item())")

    def __complex__(self):
        raise TypeError("complex() of a device array (use .item())")

    def __bool__(self):  # CuPy allows it for one value (a synchronisation)
        return bool(self._a)

    def __len__(self):
        return len(self._a)

    def __iter__(self):
        return (wrap(item) for item in self._a)

    def __repr__(self):
        return f"DeviceArray({self._a!r})"

    # -- the array API ----------------------------------------------------------
    @property
    def shape(self):
        return self._a.shape

    @property
    def dtype(self):
        return self._a.dtype

    @property
    def ndim(self):
        return self._a.ndim

    @property
    def size(self):
        return self._a.size

    @property
    def nbytes(self):
        return self._a.nbytes

    @property
    def itemsize(self):
        return self._a.itemsize

    @property
    def T(self):  # noqa: N802 - NumPy's name
        return DeviceArray(self._a.T)

    @property
    def real(self):
        return DeviceArray(self._a.real)

    @property
    def flags(self):
        return self._a.flags

    def __getattr__(self, name):
        if name.startswith("__"):  # __array_interface__ and kin: no way around __array__
            raise AttributeError(name)
        attribute = getattr(self._a, name)
        if not callable(attribute):
            return wrap(attribute)
        return lambda *args, **kwargs: wrap(attribute(*device_args(args), **device_kwargs(kwargs)))

    def __getitem__(self, key):
        return wrap(self._a[index(key)])

    def __setitem__(self, key, value):
        self._a[index(key)] = value._a if isinstance(value, DeviceArray) else value


_ARITHMETIC = {
    "add": operator.add, "sub": operator.sub, "mul": operator.mul, "truediv": operator.truediv,
    "floordiv": operator.floordiv, "mod": operator.mod, "pow": operator.pow,
    "matmul": operator.matmul, "and": operator.and_, "or": operator.or_, "xor": operator.xor,
    "lshift": operator.lshift, "rshift": operator.rshift,
}  # fmt: skip
_COMPARISONS = {
    "lt": operator.lt, "le": operator.le, "gt": operator.gt, "ge": operator.ge,
    "eq": operator.eq, "ne": operator.ne,
}  # fmt: skip
_UNARY = {"neg": operator.neg, "pos": operator.pos, "abs": operator.abs, "invert": operator.invert}
for _name, _op in _ARITHMETIC.items():
    setattr(
        DeviceArray, f"__{_name}__", lambda self, other, _op=_op: wrap(_op(self._a, operand(other)))
    )
    setattr(
        DeviceArray,
        f"__r{_name}__",
        lambda self, other, _op=_op: wrap(_op(operand(other), self._a)),
    )

    def _inplace(self, other, _op=_op):
        self._a = _op(self._a, operand(other))
        return self

    setattr(DeviceArray, f"__i{_name}__", _inplace)
for _name, _op in _COMPARISONS.items():
    setattr(
        DeviceArray, f"__{_name}__", lambda self, other, _op=_op: wrap(_op(self._a, operand(other)))
    )
for _name, _op in _UNARY.items():
    setattr(DeviceArray, f"__{_name}__", lambda self, _op=_op: wrap(_op(self._a)))
DeviceArray.__hash__ = None


def operand(value):
    """A value device arithmetic may take: a device array, or a Python or NumPy scalar."""
    if isinstance(value, DeviceArray):
        return value._a
    if isinstance(value, np.ndarray):
        raise TypeError("a host NumPy array in device arithmetic (use xp.asarray first)")
    return value


def index(key):
    if isinstance(key, tuple):
        return tuple(index(k) for k in key)
    return key._a if isinstance(key, DeviceArray) else key


def wrap(value):
    """NumPy results as CuPy gives them: arrays, and reductions as 0-d arrays, on the device."""
    if isinstance(value, np.ndarray):
        return DeviceArray(value)
    if isinstance(value, np.generic):
        return DeviceArray(np.asarray(value))
    if isinstance(value, tuple):
        return tuple(wrap(v) for v in value)
    if isinstance(value, list):
        return [wrap(v) for v in value]
    return value


def device_args(args):
    return [device_arg(a) for a in args]


def device_kwargs(kwargs):
    return {k: device_arg(v) for k, v in kwargs.items()}


def device_arg(value):
    if isinstance(value, (list, tuple)):
        return type(value)(device_arg(v) for v in value)
    return operand(value)


class Namespace:
    """NumPy's functions, taking and giving device arrays; host arrays only where CuPy takes them
    (``asarray`` and its kin)."""

    def __init__(self, module, name):
        self._module, self.__name__ = module, name

    def __getattr__(self, name):
        attribute = getattr(self._module, name)
        if isinstance(attribute, type) or not callable(attribute):
            if hasattr(attribute, "__file__") or type(attribute).__name__ == "module":
                return Namespace(attribute, f"{self.__name__}.{name}")
            return attribute
        if name in HOST_IN:

            def host_in(value, *args, **kwargs):
                value = value._a if isinstance(value, DeviceArray) else value
                return DeviceArray(np.array(attribute(value, *args, **kwargs), copy=True))

            return host_in

        def function(*args, **kwargs):
            return wrap(attribute(*device_args(args), **device_kwargs(kwargs)))

        function.__name__ = name
        return function


strict = Namespace(np, "strict")


def cupyx_modules() -> dict:
    """``sys.modules`` entries for ``cupyx.scipy.ndimage`` as SciPy's ndimage on device arrays
    (what the scripts import from cupyx when ``xp`` is not NumPy)."""
    import types

    from scipy import ndimage

    cupyx, scipy_part = types.ModuleType("cupyx"), types.ModuleType("cupyx.scipy")
    device_ndimage = Namespace(ndimage, "cupyx.scipy.ndimage")
    cupyx.scipy, scipy_part.ndimage = scipy_part, device_ndimage
    return {"cupyx": cupyx, "cupyx.scipy": scipy_part, "cupyx.scipy.ndimage": device_ndimage}
