"""A single-node Slurm cluster on this machine, for the tests marked ``slurm`` and the Slurm benchmark.

Debian's ``slurm-wlm``, ``slurmdbd`` and ``munge`` packages (tests/support/install_services.sh)
run a whole cluster on localhost: munged, slurmdbd (accounting in the local MariaDB, so
``sacct`` works), slurmctld and slurmd. As root, `start`:

- makes a munge key with ``dd`` when ``/etc/munge/munge.key`` is missing and starts
  ``munged`` as the munge user unless a munge daemon already answers;
- writes ``slurm.conf`` for one node named after this host with its real CPU count and
  a little less than its memory, ``SelectType=select/cons_tres`` with
  ``CR_Core_Memory``, ``SlurmUser=root``, ``ProctrackType=proctrack/linuxproc`` and
  ``TaskPlugin=task/none`` (no cgroups on these machines), state, spool, logs and pid
  files under the cluster's directory;
- enforces memory requests without cgroups: ``jobacct_gather/linux`` samples each
  step's resident memory every second and ``JobAcctGatherParams=OverMemoryKill`` kills
  a step over its ``--mem``. Such a job ends ``FAILED`` with exit code ``0:9`` and
  slurmstepd writes ``Exceeded job memory limit`` into its standard error; Slurm's own
  ``OUT_OF_MEMORY`` state needs the cgroup plugins (measured on this machine kind:
  without them it is never set);
- creates the accounting database afresh (a new cluster numbers its jobs from 1 again)
  and starts slurmdbd, then slurmctld and slurmd, and waits until ``sinfo`` shows the
  node idle (about 4 s).

Clients find the configuration through ``/etc/slurm/slurm.conf``, linked to the
cluster's own when no such file exists, else through ``SLURM_CONF`` (`environment`).

The pytest hooks start the cluster for a test session (in the xdist controller or a
plain run) when the binaries exist and no cluster answers yet, in the background so
that the session does not wait for it; the ``slurm_cluster`` fixture waits for it.
Sessions that run at the same time share the cluster (each registers its pid under
`SESSION_DIR`); the last one to end stops it. For humans and the benchmark::

    python tests/support/slurm_cluster.py start|stop|status DIR
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

SESSION_DIR = Path("/tmp/skybutler-slurm")
"""Where the test sessions' cluster lives (one per machine, shared by concurrent sessions)."""

DATABASE = "skybutler_slurm_acct"
"""The accounting database in the local MariaDB (root, no password), made afresh at each start."""

MYSQL_HOST = "127.0.0.1"

PARTITION = "debug"

DAEMONS = ("slurmd", "slurmctld", "slurmdbd")
"""In the order they are stopped."""

_MARK = "# written by tests/support/slurm_cluster.py"
_SYSTEM_CONF = Path("/etc/slurm/slurm.conf")
_MUNGE_KEY = Path("/etc/munge/munge.key")
_STARTING = "SKYBUTLER_SLURM_STARTING"
"""Set by the controller for its workers: the directory of a cluster being started in the background."""


class ClusterError(RuntimeError):
    """The cluster could not be started (the message says which step and where its log is)."""


# -- looking ---------------------------------------------------------------------------------


def binaries_present() -> bool:
    """Whether Slurm's daemons and client commands and munge are installed."""
    return all(shutil.which(b) for b in ("slurmctld", "slurmd", "sinfo", "sbatch", "scontrol", "munged"))


def node_state() -> str | None:
    """The state ``sinfo`` shows for the first node (``idle``, ``mixed``...), or None when no cluster answers."""
    if shutil.which("sinfo") is None:
        return None
    try:
        done = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=5)
    except subprocess.TimeoutExpired:
        return None
    lines = done.stdout.split()
    return lines[0].rstrip("*~#$@") if done.returncode == 0 and lines else None


def node_ready() -> bool:
    """Whether the node is up: idle, partly used (mixed), or full with jobs that will end (allocated).

    Allocated counts: another test's jobs may fill the node when a test asks, and its
    jobs then wait their turn rather than skip.
    """
    return node_state() in ("idle", "mixed", "allocated", "completing")


def accounting_works() -> bool:
    """Whether ``sacct`` answers (slurmdbd is up)."""
    done = subprocess.run(["sacct", "-X", "-n", "-j", "1"], capture_output=True, text=True, timeout=10)
    return done.returncode == 0


def environment(directory: Path) -> dict[str, str]:
    """Environment variables clients of the cluster in ``directory`` need (``SLURM_CONF`` unless linked)."""
    conf = Path(directory) / "etc" / "slurm.conf"
    if _SYSTEM_CONF.is_symlink() and _SYSTEM_CONF.resolve() == conf.resolve():
        return {}
    return {"SLURM_CONF": str(conf)}


# -- starting ----------------------------------------------------------------------------


def _memory_mib() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024
    raise ClusterError("cannot read MemTotal from /proc/meminfo")


def _run(args: list[str], what: str, *, env: dict[str, str] | None = None, timeout: float = 30) -> str:
    try:
        done = subprocess.run(args, capture_output=True, text=True, env=env, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ClusterError(f"{what}: {exc}") from None
    if done.returncode != 0:
        raise ClusterError(f"{what}: {' '.join(args)} exited with {done.returncode}: {done.stderr.strip()}")
    return done.stdout


def _munge_answers() -> bool:
    if shutil.which("munge") is None:
        return False
    with contextlib.suppress(OSError, subprocess.TimeoutExpired):
        credential = subprocess.run(["munge", "-n"], capture_output=True, timeout=5)
        if credential.returncode == 0:
            return subprocess.run(["unmunge"], input=credential.stdout, capture_output=True,
                                  timeout=5).returncode == 0
    return False


def _start_munge(directory: Path) -> None:
    """Start munged as the munge user (making its key with dd if there is none) unless one answers."""
    if _munge_answers():
        return
    if not _MUNGE_KEY.exists():
        _MUNGE_KEY.parent.mkdir(parents=True, exist_ok=True)
        _run(["dd", "if=/dev/urandom", f"of={_MUNGE_KEY}", "bs=1", "count=1024"], "making the munge key")
        shutil.chown(_MUNGE_KEY, "munge", "munge")
        _MUNGE_KEY.chmod(0o400)
    for path in (Path("/run/munge"), Path("/var/log/munge"), Path("/var/lib/munge")):
        path.mkdir(parents=True, exist_ok=True)
        shutil.chown(path, "munge", "munge")
    _run(["runuser", "-u", "munge", "--", shutil.which("munged") or "munged"], "starting munged")
    pid = Path("/run/munge/munged.pid")
    deadline = time.monotonic() + 10
    while not _munge_answers():
        if time.monotonic() > deadline:
            raise ClusterError("munged started but does not answer (see /var/log/munge/munged.log)")
        time.sleep(0.05)
    if pid.exists():  # stopped with the cluster: it was not running before
        shutil.copyfile(pid, directory / "pid" / "munged.pid")


def _mysql(sql: str) -> bool:
    client = shutil.which("mariadb") or shutil.which("mysql")
    if client is None:
        return False
    with contextlib.suppress(OSError, subprocess.TimeoutExpired):
        return subprocess.run([client, "-uroot", f"-h{MYSQL_HOST}", "-e", sql], capture_output=True,
                              timeout=20).returncode == 0
    return False


def write_config(directory: Path, *, accounting: bool) -> Path:
    """Write ``etc/slurm.conf`` (and ``etc/slurmdbd.conf`` with accounting) for this machine; returns slurm.conf."""
    host = socket.gethostname()
    cpus = os.cpu_count() or 1
    total = _memory_mib()
    # A little under the machine's memory: slurmd drains a node that has less than it is said to have.
    memory = max(256, min(total - 512, int(total * 0.95)))
    d = directory.resolve()
    lines = [
        _MARK,
        "ClusterName=skybutler",
        f"SlurmctldHost={host}",
        "SlurmUser=root",
        "SlurmdUser=root",
        "AuthType=auth/munge",
        f"StateSaveLocation={d}/state",
        f"SlurmdSpoolDir={d}/spool",
        f"SlurmctldPidFile={d}/pid/slurmctld.pid",
        f"SlurmdPidFile={d}/pid/slurmd.pid",
        f"SlurmctldLogFile={d}/log/slurmctld.log",
        f"SlurmdLogFile={d}/log/slurmd.log",
        "SlurmctldPort=6817",
        "SlurmdPort=6818",
        # No cgroups on these machines: processes are tracked by parentage, tasks are not bound.
        "ProctrackType=proctrack/linuxproc",
        "TaskPlugin=task/none",
        "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_Core_Memory",
        # Memory requests enforced without cgroups: sampled each second, a step over --mem is killed.
        "JobAcctGatherType=jobacct_gather/linux",
        "JobAcctGatherParams=OverMemoryKill",
        "JobAcctGatherFrequency=task=1",
        f"AccountingStorageType=accounting_storage/{'slurmdbd' if accounting else 'none'}",
        *(["AccountingStorageHost=localhost"] if accounting else []),
        "JobCompType=jobcomp/none",
        # Finished jobs stay visible to `scontrol show job` for an hour (without accounting, the only record).
        "MinJobAge=3600",
        "ReturnToService=2",
        "SchedulerType=sched/backfill",
        # Schedule at once on every submission and completion: Slurm's defaults batch these for
        # throughput, which cost each job ~2 s between submission and start (benchmarks/bench_slurm.py).
        "SchedulerParameters=sched_min_interval=0,batch_sched_delay=0",
        "MpiDefault=none",
        "KillWait=5",
        "InactiveLimit=0",
        # A job that names no memory gets its cores' share of the node, not the whole node.
        f"DefMemPerCPU={memory // cpus}",
        f"NodeName={host} CPUs={cpus} RealMemory={memory} State=UNKNOWN",
        f"PartitionName={PARTITION} Nodes=ALL Default=YES MaxTime=INFINITE State=UP",
    ]
    etc = directory / "etc"
    etc.mkdir(parents=True, exist_ok=True)
    conf = etc / "slurm.conf"
    conf.write_text("\n".join(lines) + "\n")
    if accounting:
        dbd = etc / "slurmdbd.conf"
        dbd.write_text("\n".join([
            _MARK, "AuthType=auth/munge", "DbdHost=localhost", "SlurmUser=root",
            f"PidFile={d}/pid/slurmdbd.pid", f"LogFile={d}/log/slurmdbd.log",
            "StorageType=accounting_storage/mysql", f"StorageHost={MYSQL_HOST}", "StorageUser=root",
            f"StorageLoc={DATABASE}"]) + "\n")
        dbd.chmod(0o600)  # slurmdbd refuses a configuration others can read
    return conf


def _link_system_conf(conf: Path) -> None:
    """Point /etc/slurm/slurm.conf at ``conf`` when it is absent or an earlier link of ours."""
    if _SYSTEM_CONF.is_symlink():
        target = _SYSTEM_CONF.resolve()
        if target.exists() and _MARK not in target.read_text():
            return
        _SYSTEM_CONF.unlink()
    elif _SYSTEM_CONF.exists():
        return  # a real configuration: clients are pointed at ours by SLURM_CONF instead
    with contextlib.suppress(OSError):
        _SYSTEM_CONF.parent.mkdir(parents=True, exist_ok=True)
        _SYSTEM_CONF.symlink_to(conf)


def _wait(what: str, check, timeout: float, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            tail = log.read_text(errors="replace").splitlines()[-5:] if log.exists() else []
            raise ClusterError(f"{what} within {timeout:.0f} s; {log}: " + " | ".join(tail))
        time.sleep(0.1)


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def start(directory: Path, *, accounting: bool = True, timeout: float = 60) -> None:
    """Start munged (if needed), slurmdbd (with ``accounting``), slurmctld and slurmd; wait for the node.

    Accounting is left out, and said so in ``DIR/status``, when MariaDB does not answer.

    Raises
    ------
    ClusterError
        Not root, or a daemon did not start (the message quotes its log).
    """
    if os.geteuid() != 0:
        raise ClusterError("starting the test cluster needs root (SlurmUser=root, munged as the munge user)")
    directory = Path(directory)
    for sub in ("state", "spool", "log", "pid", "etc"):
        (directory / sub).mkdir(parents=True, exist_ok=True)
    notes = []
    if accounting and not _mysql(f"DROP DATABASE IF EXISTS {DATABASE}; CREATE DATABASE {DATABASE}"):
        accounting = False
        notes.append(f"accounting off: MariaDB at {MYSQL_HOST} (root, no password) does not answer")
    if accounting and shutil.which("slurmdbd") is None:
        accounting = False
        notes.append("accounting off: slurmdbd is not installed (apt install slurmdbd)")
    conf = write_config(directory, accounting=accounting)
    _link_system_conf(conf)
    env = {**os.environ, "SLURM_CONF": str(conf.resolve())}
    _start_munge(directory)
    if accounting:
        _run(["slurmdbd"], "starting slurmdbd", env=env)
        _wait("slurmdbd did not listen on port 6819", lambda: _port_open(6819), timeout, directory / "log/slurmdbd.log")
    _run(["slurmctld"], "starting slurmctld", env=env)
    _run(["slurmd"], "starting slurmd", env=env)

    def idle() -> bool:
        done = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, env=env, timeout=5)
        return done.returncode == 0 and done.stdout.split()[:1] == ["idle"]

    _wait("the node did not become idle", idle, timeout, directory / "log/slurmctld.log")
    (directory / "status").write_text("\n".join(["up", *notes]) + "\n")


# -- stopping ----------------------------------------------------------------------------


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError):  # a zombie is gone for our purposes
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    return False


def _pid_alive(pid_file: Path) -> bool:
    try:
        return _alive(int(pid_file.read_text().split()[0]))
    except (OSError, ValueError, IndexError):
        return False


def _stop_pid(pid_file: Path, timeout: float = 15) -> None:
    try:
        pid = int(pid_file.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)
    pid_file.unlink(missing_ok=True)


def stop(directory: Path) -> None:
    """Cancel the cluster's jobs and stop the daemons started in ``directory`` (by their pid files)."""
    directory = Path(directory)
    conf = directory / "etc" / "slurm.conf"
    env = {**os.environ, "SLURM_CONF": str(conf.resolve())}
    if (directory / "pid" / "slurmctld.pid").exists():
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):
            # Every job of this cluster is a test's: none may outlive it (slurmstepd would run on).
            subprocess.run(["scancel", "--user", "root"], env=env, capture_output=True, timeout=10)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and subprocess.run(
                    ["squeue", "-h", "-o", "%i"], env=env, capture_output=True, text=True, timeout=5).stdout.strip():
                time.sleep(0.2)
    for daemon in DAEMONS:
        _stop_pid(directory / "pid" / f"{daemon}.pid")
    _stop_pid(directory / "pid" / "munged.pid")
    if _SYSTEM_CONF.is_symlink() and _SYSTEM_CONF.resolve() == conf.resolve():
        _SYSTEM_CONF.unlink()
    if (directory / "etc" / "slurmdbd.conf").exists():
        _mysql(f"DROP DATABASE IF EXISTS {DATABASE}")
    with contextlib.suppress(OSError):
        (directory / "status").write_text("stopped\n")


def status(directory: Path) -> str:
    """One line per daemon of ``directory`` (running or not) and what sinfo says."""
    lines = []
    for daemon in (*DAEMONS, "munged"):
        pid_file = Path(directory) / "pid" / f"{daemon}.pid"
        try:
            pid = int(pid_file.read_text().split()[0])
            lines.append(f"{daemon}: {'running' if _alive(pid) else 'not running'} (pid {pid})")
        except (OSError, ValueError, IndexError):
            lines.append(f"{daemon}: no pid file")
    lines.append(f"sinfo: node {node_state() or 'does not answer'}")
    with contextlib.suppress(OSError):
        lines.extend((Path(directory) / "status").read_text().splitlines()[1:])
    return "\n".join(lines)


# -- sessions sharing the cluster ----------------------------------------------------------


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / "lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def _live_users(directory: Path) -> list[Path]:
    users = []
    for path in (directory / "users").glob("*"):
        if path.name.isdigit() and _alive(int(path.name)):
            users.append(path)
        else:
            path.unlink(missing_ok=True)
    return users


def join_session(directory: Path = SESSION_DIR) -> bool:
    """Make sure a cluster runs for this process (starting it in ``directory`` if none answers).

    Returns whether this process uses the cluster of ``directory`` (and must `leave_session`).
    Raises `ClusterError` when starting failed.
    """
    with _locked(directory):
        # Ours whoever started it: a session killed before it could stop the cluster leaves it to the next.
        ours = _pid_alive(directory / "pid" / "slurmctld.pid") and node_state() is not None
        if not ours:
            if node_state() is not None:
                return False  # a cluster of someone else's: used as it is, never stopped
            stop(directory)  # what a session killed before it could stop left behind
            start(directory)
        (directory / "users").mkdir(exist_ok=True)
        (directory / "users" / str(os.getpid())).touch()
    return True


def leave_session(directory: Path = SESSION_DIR) -> None:
    """This process no longer uses the cluster; the last one to leave stops it."""
    with _locked(directory):
        (directory / "users" / str(os.getpid())).unlink(missing_ok=True)
        if not _live_users(directory):
            stop(directory)


# -- pytest hooks and fixture ------------------------------------------------------------------

_session: dict[str, object] = {}


def _start_in_background(directory: Path) -> None:
    try:
        _session["joined"] = join_session(directory)
    except (ClusterError, OSError, subprocess.SubprocessError) as exc:
        _session["error"] = str(exc)
        with contextlib.suppress(OSError):
            (directory / "error").write_text(str(exc))
    finally:
        with contextlib.suppress(OSError):
            (directory / "started").touch()


@pytest.hookimpl(tryfirst=True)
def pytest_sessionstart(session: pytest.Session) -> None:
    """Start the test cluster in the background (controller or plain run only) when none answers."""
    config = session.config
    if hasattr(config, "workerinput") or not binaries_present() or os.geteuid() != 0:
        return
    if node_state() is not None and not _pid_alive(SESSION_DIR / "pid" / "slurmctld.pid"):
        return  # a cluster that is not the sessions': used as it is
    SESSION_DIR.mkdir(parents=True, exist_ok=True)
    (SESSION_DIR / "started").unlink(missing_ok=True)
    (SESSION_DIR / "error").unlink(missing_ok=True)
    # Before xdist starts its workers (tryfirst): they inherit these and wait for the start.
    os.environ[_STARTING] = str(SESSION_DIR)
    os.environ["SLURM_CONF"] = str(SESSION_DIR / "etc" / "slurm.conf")
    thread = threading.Thread(target=_start_in_background, args=(SESSION_DIR,), name="slurm-cluster", daemon=True)
    thread.start()
    _session["thread"] = thread


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Stop the test cluster if this session started it and no other session still uses it."""
    if hasattr(session.config, "workerinput"):
        return
    thread = _session.pop("thread", None)
    if isinstance(thread, threading.Thread):
        thread.join()
    if _session.pop("joined", False):
        leave_session(SESSION_DIR)


def require(what: str) -> None:
    """Skip the test for want of ``what``, or fail it under SKYBUTLER_REQUIRE_SERVICES=1.

    As tests/conftest.py's ``_service_missing`` (not imported: this module is imported by it).
    """
    if os.environ.get("SKYBUTLER_REQUIRE_SERVICES") == "1":
        pytest.fail(f"{what} is not available and SKYBUTLER_REQUIRE_SERVICES=1")
    pytest.skip(f"{what} is not available")


@pytest.fixture(scope="session")
def slurm_cluster() -> dict[str, str]:
    """The environment of a cluster whose node is up (`node_ready`); skips (or fails) when there is none.

    Waits for a start the session's controller has under way (up to a minute).
    """
    starting = os.environ.get(_STARTING)
    if starting:
        deadline = time.monotonic() + 60
        while not (Path(starting) / "started").exists() and time.monotonic() < deadline:
            time.sleep(0.2)
    if not node_ready():
        error = Path(starting) / "error" if starting else None
        why = f" ({error.read_text().strip()})" if error is not None and error.exists() else ""
        require(f"a Slurm cluster (sinfo shows no node up: idle, mixed or allocated){why}")
    return {k: v for k, v in os.environ.items() if k == "SLURM_CONF"}


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in ("start", "stop", "status"):
        print(__doc__.strip().splitlines()[0], file=sys.stderr)
        print("usage: python tests/support/slurm_cluster.py start|stop|status DIR", file=sys.stderr)
        return 2
    command, directory = argv[0], Path(argv[1])
    if command == "start":
        if node_state() is not None:
            print(f"a cluster answers already (sinfo: node {node_state()}); not starting another", file=sys.stderr)
            return 1
        try:
            start(directory)
        except ClusterError as exc:
            print(f"slurm_cluster: {exc}", file=sys.stderr)
            return 1
        print(status(directory))
        env = environment(directory)
        if env:
            print("clients need: " + " ".join(f"export {k}={v}" for k, v in env.items()))
    elif command == "stop":
        stop(directory)
    else:
        print(status(directory))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
