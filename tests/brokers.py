"""A real mosquitto broker on 127.0.0.1 for tests, restartable on the same port, and TLS
files from a private test CA."""

from __future__ import annotations

import contextlib
import getpass
import os
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

MOSQUITTO = "/usr/sbin/mosquitto"
WAIT_S = 10.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Broker:
    """mosquitto on 127.0.0.1 that can be stopped and started again on the same port.

    ``persistence true``: the subscriber's session and its queued QoS 1 messages
    survive the restart, as with a real home broker.
    """

    def __init__(self, folder: Path, extra: tuple[str, ...] = (), port: int | None = None) -> None:
        if not os.path.exists(MOSQUITTO):
            pytest.skip(f"{MOSQUITTO} is not installed")
        self.host, self.port = "127.0.0.1", port or free_port()
        folder.mkdir(parents=True, exist_ok=True)
        self.conf = folder / "mosquitto.conf"
        lines = [f"listener {self.port} 127.0.0.1", "persistence true", f"persistence_location {folder}/",
                 "autosave_interval 1", *extra]
        if os.geteuid() == 0:
            lines.append(f"user {getpass.getuser()}")
        self.conf.write_text("\n".join(lines) + "\n")
        self.log = folder / "mosquitto.log"
        self.process: subprocess.Popen | None = None
        self.start()

    def start(self) -> None:
        with self.log.open("a") as log:  # the child has its own copy: this one is closed, not left to the GC
            self.process = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)], stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + WAIT_S
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"mosquitto exited: {self.log.read_text()}")
            try:
                socket.create_connection((self.host, self.port), timeout=0.2).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"mosquitto did not start: {self.log.read_text()}")
                time.sleep(0.05)

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(WAIT_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None


class Mqtt311Only:
    """A stand-in for a broker that speaks MQTT 3.1.1 only (mosquitto has no option to refuse MQTT 5): a TCP
    listener on 127.0.0.1 that answers an MQTT 5 CONNECT as the 3.1.1 specification says (CONNACK with return
    code 1, unacceptable protocol version, then it closes the connection) and relays any other connection to
    ``broker`` byte for byte. ``refused``: the MQTT 5 CONNECTs it answered; ``relayed``: the connections it
    relayed."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.refused = 0
        self.relayed = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.host, self.port = "127.0.0.1", self._listener.getsockname()[1]
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    @staticmethod
    def _read(conn: socket.socket, count: int) -> bytes:
        data = b""
        while len(data) < count:
            chunk = conn.recv(count - len(data))
            if not chunk:
                raise ConnectionError("closed")
            data += chunk
        return data

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:  # closed by stop()
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            head = self._read(conn, 1)  # CONNECT: 0x10, remaining length (1-4 bytes), "\0\4MQTT", protocol level
            while True:
                head += self._read(conn, 1)
                if not head[-1] & 0x80:
                    break
            head += self._read(conn, 7)
            if head[-1] == 5:
                self.refused += 1
                conn.sendall(b"\x20\x02\x00\x01")
                conn.close()
                return
            upstream = socket.create_connection((self.broker.host, self.broker.port))
            upstream.sendall(head)
        except OSError:
            conn.close()
            return
        with self._lock:
            self.relayed += 1
            self._sockets += [conn, upstream]
        for src, dst in ((conn, upstream), (upstream, conn)):
            threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        for sock in (src, dst):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def drop_connections(self) -> None:
        """Cut every relayed connection (as a broker restart would)."""
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def stop(self) -> None:
        self._listener.close()
        self.drop_connections()


def make_tls_files(folder: Path) -> tuple[Path, Path, Path]:
    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=folder)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt",
            "-subj", "/CN=EdgeSense test CA", "-days", "1")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
            "-subj", "/CN=127.0.0.1")
    (folder / "san.cnf").write_text("subjectAltName=IP:127.0.0.1\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", "server.crt", "-days", "1", "-extfile", "san.cnf")
    return folder / "ca.crt", folder / "server.crt", folder / "server.key"
