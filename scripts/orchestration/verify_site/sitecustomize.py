"""verify's hook into every Python process of a run: the wall clock it shows and the CPU count it
reports.

    PYTHONPATH=scripts/orchestration/verify_site CRH_CLOCK_START=1761912000 python train.py

verify puts this folder first on ``PYTHONPATH`` for the commands it runs;
Python imports ``sitecustomize`` at start-up. Then:

- ``CRH_CLOCK_START`` (Unix seconds): the wall clock (``time.time``,
  ``time.time_ns``, ``time.localtime``/``gmtime``/``ctime``/``strftime``
  without a time, ``datetime.now``/``utcnow``/``today``, ``date.today``)
  reads that instant at ``CRH_CLOCK_REAL_START`` (the real time the run
  started; else at import) and runs on at the real rate. Intervals, monotonic
  clocks, file times and code outside Python are untouched.
- ``CRH_CPU_COUNT``: ``os.cpu_count()`` (and ``os.process_cpu_count()``) report it.

A ``sitecustomize`` that this one shadows is run afterwards, as if it were alone.
"""

import os
import sys


def _shift_the_clock(start: float, real_start: float) -> None:
    import datetime as dt
    import functools
    import time

    real_time, real_time_ns = time.time, time.time_ns
    offset_ns = int((start - real_start) * 1e9)

    def fake_time() -> float:
        return real_time() + offset_ns / 1e9

    def fake_time_ns() -> int:
        return real_time_ns() + offset_ns

    real_localtime, real_gmtime, real_ctime = time.localtime, time.gmtime, time.ctime
    real_strftime, real_asctime = time.strftime, time.asctime

    def localtime(secs=None):
        return real_localtime(fake_time() if secs is None else secs)

    def gmtime(secs=None):
        return real_gmtime(fake_time() if secs is None else secs)

    def ctime(secs=None):
        return real_ctime(fake_time() if secs is None else secs)

    def strftime(format, t=None):
        return real_strftime(format, real_localtime(fake_time()) if t is None else t)

    def asctime(t=None):
        return real_asctime(real_localtime(fake_time()) if t is None else t)

    # partial objects, like the built-ins they replace, do not bind as methods
    # (logging.Formatter.converter)
    for function in (fake_time, fake_time_ns, localtime, gmtime, ctime, strftime, asctime):
        setattr(time, function.__name__.replace("fake_", ""), functools.partial(function))

    real_date, real_datetime = dt.date, dt.datetime

    class DateMeta(type):
        def __instancecheck__(cls, obj):
            return isinstance(obj, real_date)

        def __subclasscheck__(cls, sub):
            return issubclass(sub, real_date)

    class DatetimeMeta(DateMeta):
        def __instancecheck__(cls, obj):
            return isinstance(obj, real_datetime)

        def __subclasscheck__(cls, sub):
            return issubclass(sub, real_datetime)

    class date(real_date, metaclass=DateMeta):
        @classmethod
        def today(cls):
            return cls.fromtimestamp(fake_time())

    class datetime(real_datetime, metaclass=DatetimeMeta):
        @classmethod
        def now(cls, tz=None):
            return cls.fromtimestamp(fake_time(), tz)

        @classmethod
        def utcnow(cls):
            return cls.fromtimestamp(fake_time(), dt.timezone.utc).replace(tzinfo=None)

        @classmethod
        def today(cls):
            return cls.fromtimestamp(fake_time())

    for fake, real in ((date, real_date), (datetime, real_datetime)):
        fake.__module__, fake.__qualname__, fake.__name__ = (
            "datetime",
            real.__qualname__,
            real.__name__,
        )
    dt.date, dt.datetime = date, datetime


def _report_cpus(count: int) -> None:
    os.cpu_count = lambda: count
    if hasattr(os, "process_cpu_count"):
        os.process_cpu_count = lambda: count


def _run_the_shadowed_sitecustomize() -> None:
    import importlib.machinery
    import importlib.util

    # the one shadowed is the next on the path: searching every other folder would find, where
    # two such hooks are on the path, the one that ran this one, and run it again
    here = os.path.dirname(os.path.abspath(__file__))
    folders = [os.path.abspath(entry or os.curdir) for entry in sys.path]
    after = sys.path[folders.index(here) + 1 :] if here in folders else sys.path
    others = [entry for entry in after if os.path.abspath(entry or os.curdir) != here]
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", others)
    if spec is None or spec.loader is None:
        return
    module = importlib.util.module_from_spec(spec)
    sys.modules["sitecustomize"] = module
    spec.loader.exec_module(module)


def _install() -> None:
    start = os.environ.get("CRH_CLOCK_START")
    if start:
        import time

        real_start = os.environ.get("CRH_CLOCK_REAL_START")
        _shift_the_clock(float(start), float(real_start) if real_start else time.time())
    count = os.environ.get("CRH_CPU_COUNT")
    if count:
        _report_cpus(int(count))
    _run_the_shadowed_sitecustomize()


_install()
