"""Ray stays optional: the package and the local sweep never import it."""
import subprocess
import sys

import pytest


def test_the_local_backend_never_imports_ray():
    code = ("import sys, helpers, helpers.runs.sweep, helpers.report.reproduce\n"
            "from helpers.runs.sweep import Chain, chains\n"
            "chains({'ROME': [0, 1]})\n"
            "assert 'ray' not in sys.modules, 'ray was imported'\n")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_an_unknown_backend_for_make_reproduce_is_refused(capsys):
    from helpers.report import reproduce

    with pytest.raises(SystemExit):
        reproduce.main(["--profile", "smoke", "--backend", "dask"])
    assert "invalid choice: 'dask'" in capsys.readouterr().err


class _Done:
    """A finished call: its value, or the error ``ray.get`` raises."""

    def __init__(self, value=None, error=None):
        self.value, self.error = value, error


class _FakeRay:
    """The three calls the Ray backend's scheduler makes (wait, get), answering at once."""

    @staticmethod
    def wait(futures, num_returns, timeout):
        return futures[:num_returns], futures[num_returns:]

    @staticmethod
    def get(fut):
        if fut.error is not None:
            raise fut.error
        return fut.value


class _Method:
    def __init__(self, call):
        self.remote = call


class _RestartingWorker:
    """A worker whose process dies in its first unit; Ray restarts it, and the next ``restart_calls``
    calls made on it fail at once (its constructor has not run again yet), as Ray's do."""

    def __init__(self, dies: bool, restart_calls: int):
        self.dies, self.restart_calls, self.ran = dies, restart_calls, []
        self.run = _Method(self._run)
        self.pid = _Method(self._pid)

    def _down(self):
        from ray.exceptions import RayActorError

        if self.restart_calls > 0:
            self.restart_calls -= 1
            return RayActorError()
        return None

    def _run(self, unit, rows, states, queue):
        from ray.exceptions import RayActorError

        if self.dies:
            self.dies = False
            return _Done(error=RayActorError())
        error = self._down()
        if error is None:
            self.ran.append(unit.label)
        return _Done(error=error)

    def _pid(self):
        return _Done(value=1, error=self._down())


class _Unit:
    def __init__(self, label):
        self.label = label

    def settings(self):
        return [], []


def test_a_restarting_worker_takes_no_unit_until_it_answers(monkeypatch):
    """A killed worker's unit runs again and nothing is reported failed, however long the restart takes:
    calls on a restarting worker fail at once, and a scheduler that handed it units would count those
    failures against them (two such failures report a unit as failed)."""
    pytest.importorskip("ray")
    from helpers.runs.backends import ray_cluster

    monkeypatch.setattr(ray_cluster.time, "sleep", lambda s: None)
    killed = _RestartingWorker(dies=True, restart_calls=5)  # the only worker: every unit waits for its restart
    units = [_Unit(f"unit {i}") for i in range(3)]
    failed = ray_cluster._run_units(_FakeRay(), units, [killed], store=None, queue=None, drain=lambda: None)
    assert failed == []
    assert sorted(killed.ran) == [u.label for u in units]  # each unit ran to its end once
    assert killed.restart_calls == 0  # it was probed through its restart


def test_a_worker_that_never_comes_back_leaves_its_units_reported(monkeypatch):
    pytest.importorskip("ray")
    from helpers.runs.backends import ray_cluster

    clock = iter(range(0, 10**6, 100))
    monkeypatch.setattr(ray_cluster.time, "sleep", lambda s: None)
    monkeypatch.setattr(ray_cluster.time, "monotonic", lambda: next(clock))
    gone = _RestartingWorker(dies=True, restart_calls=10**6)
    failed = ray_cluster._run_units(_FakeRay(), [_Unit("a"), _Unit("b")], [gone], store=None, queue=None,
                                    drain=lambda: None)
    assert sorted(failed) == [("a", "no worker came back after a restart"), ("b", "no worker came back after a restart")]
