"""A real single-node Slurm cluster in a temporary folder, for the `slurm` tests.

A private munged (own key, socket, pid and log files), slurmctld and slurmd in the foreground
as children of this process, a slurm.conf with one node (this host, all its CPUs) and one
default partition, free ports. Clients find it through ``SLURM_CONF`` (see
:meth:`LocalSlurm.env`). ``stop()`` terminates exactly the three daemons it started. Needs root
and the Debian packages slurm-wlm and munge.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

DAEMONS = ("munged", "slurmctld", "slurmd")


def missing() -> str | None:
    """Why a local cluster cannot start here, or None."""
    if os.geteuid() != 0:
        return "needs root (slurmd runs jobs as their users)"
    for exe in (*DAEMONS, "sbatch", "squeue", "scontrol"):
        if shutil.which(exe) is None and not Path(f"/usr/sbin/{exe}").exists():
            return f"{exe} not found: apt-get install slurm-wlm munge"
    return None


def _exe(name: str) -> str:
    return shutil.which(name) or f"/usr/sbin/{name}"


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


class LocalSlurm:
    def __init__(self, root: Path, cpus: int | None = None):
        self.root = Path(root)
        self.cpus = cpus or os.cpu_count() or 1
        self.procs: list[subprocess.Popen] = []
        self.host = socket.gethostname().split(".")[0]

    @property
    def conf(self) -> Path:
        return self.root / "slurm.conf"

    def env(self) -> dict:
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    def _write(self) -> None:
        r = self.root
        for d in ("state", "spool", "log", "munge"):
            (r / d).mkdir(parents=True, exist_ok=True)
        key = r / "munge" / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        (r / "munge").chmod(0o700)
        ctld_port, d_port = _free_ports(2)
        mem_mb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20
        self.conf.write_text(f"""\
ClusterName=local
SlurmctldHost={self.host}
SlurmctldPort={ctld_port}
SlurmdPort={d_port}
AuthType=auth/munge
AuthInfo=socket={r}/munge/munge.socket
CryptoType=crypto/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SlurmUser=root
SlurmdUser=root
StateSaveLocation={r}/state
SlurmdSpoolDir={r}/spool
SlurmctldPidFile={r}/slurmctld.pid
SlurmdPidFile={r}/slurmd.pid
SlurmctldLogFile={r}/log/slurmctld.log
SlurmdLogFile={r}/log/slurmd.log
ReturnToService=2
MpiDefault=none
JobRequeue=1
KillWait=30
MinJobAge=600
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=1
MaxArraySize=10000
NodeName={self.host} CPUs={self.cpus} RealMemory={max(mem_mb - 1024, 512)} State=UNKNOWN
PartitionName=debug Nodes={self.host} Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
""")

    def _spawn(self, *cmd: str, log: str) -> subprocess.Popen:
        out = open(self.root / "log" / log, "ab")
        p = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=self.env(),
                             start_new_session=True)
        self.procs.append(p)
        return p

    def start(self, timeout: float = 60) -> LocalSlurm:
        self._write()
        r = self.root / "munge"
        self._spawn(_exe("munged"), "--foreground", "--force", f"--socket={r}/munge.socket",
                    f"--key-file={r}/munge.key", f"--pid-file={r}/munged.pid",
                    f"--log-file={r}/munged.log", f"--seed-file={r}/munged.seed",
                    log="munged.out")
        self._wait(lambda: (r / "munge.socket").exists(), timeout, "munged socket")
        self._spawn(_exe("slurmctld"), "-D", "-i", "-f", str(self.conf), log="slurmctld.out")
        self._spawn(_exe("slurmd"), "-D", "-f", str(self.conf), log="slurmd.out")
        self._wait(self._node_idle, timeout, "node idle in sinfo")
        return self

    def _node_idle(self) -> bool:
        out = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True,
                             env=self.env())
        return out.returncode == 0 and out.stdout.strip().startswith("idle")

    def _wait(self, ok, timeout: float, what: str) -> None:
        end = time.time() + timeout
        while time.time() < end:
            dead = [p for p in self.procs if p.poll() is not None]
            if dead:
                raise RuntimeError(f"{dead[0].args[0]} exited with {dead[0].returncode}; "
                                   f"logs in {self.root / 'log'}")
            if ok():
                return
            time.sleep(0.5)
        raise TimeoutError(f"local Slurm: no {what} after {timeout:.0f} s; logs in "
                           f"{self.root / 'log'}")

    def stop(self) -> None:
        """Terminate the daemons this object started (and nothing else), newest first."""
        for p in reversed(self.procs):
            if p.poll() is None:
                p.terminate()
        for p in reversed(self.procs):
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.procs.clear()
