"""What the kernel's scheduler applies to a service of a sandbox, read from inside it."""

from __future__ import annotations

from daemons.algoctl.sandbox import Sandbox


def cpu_weight(sandbox: Sandbox, unit: str) -> int:
    """The CPU weight the kernel applies to ``unit``'s main process: its cgroup's for the cpu controller (cgroup v2
    ``cpu.weight``, v1 ``cpu.shares`` of 1024 per 100), 100 when it shares the root's, as every service without
    ``CPUWeight=`` does on v1."""
    pid = sandbox.show(unit, "MainPID")["MainPID"]
    for line in sandbox.run("cat", f"/proc/{pid}/cgroup").stdout.splitlines():
        _, controllers, path = line.split(":", 2)
        if controllers == "":  # v2: the unified hierarchy, where the cpu controller may or may not be enabled
            weight = sandbox.run("cat", f"/sys/fs/cgroup{path}/cpu.weight").stdout.strip()
            return int(weight) if weight else 100
        if "cpu" in controllers.split(","):
            if path == "/":
                return 100
            mount = sandbox.run("sh", "-c", f"ls -d /sys/fs/cgroup/{controllers}* | head -1").stdout.strip()
            return int(sandbox.run("cat", f"{mount}{path}/cpu.shares").stdout) * 100 // 1024
    raise AssertionError(f"no cpu controller line in {unit}'s /proc/{pid}/cgroup")
