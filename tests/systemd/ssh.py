"""SSH into simulated hosts (tests/systemd/hosts.py), for Ansible to deploy them over a real connection.

Each host runs OpenSSH's sshd as a unit of its own private systemd, listening on the host's address only
(inside its network namespace), with a host key made for the test; the controller's key is the only one it
accepts, for root, and the controller trusts only the hosts' keys (a known_hosts file of their addresses).
Everything lives in the test's directory: nothing of the machine's own SSH set-up is read or changed.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from daemons.algoctl.sandbox import Sandbox

SSHD = Path("/usr/sbin/sshd")
UNIT = "algo-mh-sshd.service"


def unavailable_reason() -> str | None:
    if not SSHD.exists() or shutil.which("ssh") is None or shutil.which("ssh-keygen") is None:
        return "OpenSSH is not installed (apt-get install openssh-server openssh-client)"
    return None


def _keygen(path: Path, comment: str) -> str:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
                   check=True, capture_output=True)
    return path.with_suffix(".pub").read_text().strip()


class SshAccess:
    """The controller's key pair and each host's sshd (its config, key and unit)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.client_key = root / "controller_ed25519"
        self.authorized_keys = root / "authorized_keys"
        self.authorized_keys.write_text(_keygen(self.client_key, "algo-mh-controller") + "\n")
        self.known_hosts = root / "known_hosts"
        self.known_hosts.write_text("")

    def install(self, box: Sandbox, host: str, address: str) -> None:
        """Put sshd's unit into ``box`` (before or after it boots; start it with ``box.systemctl``)."""
        d = self.root / host
        d.mkdir()
        public = _keygen(d / "host_ed25519", host)
        with self.known_hosts.open("a") as f:
            f.write(f"{address} {' '.join(public.split()[:2])}\n")
        config = d / "sshd_config"
        config.write_text("\n".join([
            f"ListenAddress {address}:22",
            f"HostKey {d / 'host_ed25519'}",
            f"AuthorizedKeysFile {self.authorized_keys}",
            "PermitRootLogin prohibit-password", "PasswordAuthentication no", "KbdInteractiveAuthentication no",
            "UsePAM no",  # no PAM session (loginuid, logind) inside a private systemd
            "StrictModes no",  # the key files sit in the test's directory, not in a home
            "PrintMotd no", "PrintLastLog no", "PidFile none",
            "Subsystem sftp internal-sftp",
        ]) + "\n")
        (box.units / UNIT).write_text(
            "[Unit]\nDescription=sshd of a simulated host (the test's controller deploys it with Ansible)\n"
            f"[Service]\nExecStart={SSHD} -D -e -f {config}\nRuntimeDirectory=sshd\n")

    def ansible_vars(self, address: str) -> dict[str, str | bool]:
        """The inventory variables that reach a host at ``address`` as root with this key, checking its key."""
        return {"ansible_host": address, "ansible_user": "root", "ansible_become": False,
                "ansible_ssh_private_key_file": str(self.client_key),
                "ansible_ssh_common_args": f"-o UserKnownHostsFile={self.known_hosts} -o StrictHostKeyChecking=yes "
                                           "-o IdentitiesOnly=yes -o ConnectTimeout=10",
                "ansible_python_interpreter": "/usr/bin/python3"}
