"""Real DICOM peers for tests: a throwaway Orthanc PACS, dcmtk's ``storescu``/``echoscu``, and hostile connections.

Plain helpers, no pytest fixtures::

    reason = available()
    if reason:
        pytest.skip(reason)
    with Orthanc(tmp_path / "pacs") as pacs:
        assert echoscu(pacs.dicom_port, aec=pacs.aet).returncode == 0
        storescu(pacs.dicom_port, [path], aec=pacs.aet)
        pacs.wait_for_instances(study_uid, 1)

Orthanc reads only the configuration file written here (never ``/etc/orthanc``), so
Debian's plugins are not loaded. Orthanc 1.10 has no bind-address option: both the HTTP
and the DICOM servers listen on all interfaces. ``RemoteAccessAllowed: false`` makes the
HTTP server refuse non-loopback clients; the DICOM port accepts anyone on the network for
as long as the test runs (a random port, synthetic data).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from harness.proxy_stack import free_port as free_port  # re-exported: the DICOM tests take their helpers from here
from harness.worker_process import ROOT, BackgroundProcess

ORTHANC = "/usr/sbin/Orthanc"
DCMTK_TOOLS = ("storescu", "echoscu")
START_TIMEOUT = 30.0
STOP_TIMEOUT = 20.0
DCMTK_TIMEOUT = 60.0


def available(*, orthanc: bool = True) -> str | None:
    """None when Orthanc (unless ``orthanc=False``) and dcmtk are installed, else why tests needing them must skip."""
    missing = []
    if orthanc and not os.access(ORTHANC, os.X_OK):
        missing.append(f"{ORTHANC} (apt-get install orthanc)")
    for tool in DCMTK_TOOLS:
        if shutil.which(tool) is None:
            missing.append(f"{tool} (apt-get install dcmtk)")
    if missing:
        return "REAL-PACS TESTS SKIPPED: missing " + ", ".join(missing)
    return None


def _dcmtk(argv: list[str], timeout: float) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        # Surface a hang as a failed command, with what it printed, rather than an exception.
        out = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else exc.stdout or ""
        err = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else exc.stderr or ""
        return subprocess.CompletedProcess(argv, 124, out, err + f"\n[timed out after {timeout} s]")


def storescu(
    port: int,
    paths,
    *,
    aec: str,
    aet: str = "STORESCU",
    host: str = "127.0.0.1",
    extra_args=(),
    timeout: float = DCMTK_TIMEOUT,
) -> subprocess.CompletedProcess:
    """C-STORE ``paths`` to ``host:port``; non-zero ``returncode`` when any store fails."""
    argv = [
        "storescu",
        "-aet",
        aet,
        "-aec",
        aec,
        # Connection and DIMSE timeouts, so a dead or silent peer fails fast.
        "-to",
        "10",
        "-ta",
        "10",
        "-td",
        "30",
        *extra_args,
        host,
        str(port),
        *(str(p) for p in paths),
    ]
    return _dcmtk(argv, timeout)


def echoscu(
    port: int, *, aec: str, aet: str = "ECHOSCU", host: str = "127.0.0.1", timeout: float = DCMTK_TIMEOUT
) -> subprocess.CompletedProcess:
    """C-ECHO ``host:port``; ``returncode`` 0 when the peer answered."""
    argv = ["echoscu", "-aet", aet, "-aec", aec, "-to", "10", "-ta", "10", "-td", "30", host, str(port)]
    return _dcmtk(argv, timeout)


class PortInUse(RuntimeError):
    """Orthanc could not listen on a port that free_port() had just found free."""


class Orthanc:
    """An Orthanc PACS on free ports, used over loopback, storing under ``workdir``.

    A context manager; ``stop()`` and ``start()`` may also be called mid-test: the ports and
    the storage stay the same, so stored instances survive a restart.
    """

    def __init__(self, workdir: Path, aet: str = "ORTHANC"):
        self.workdir = Path(workdir)
        self.aet = aet
        self.http_port = free_port()
        self.dicom_port = free_port()
        self.log_path = self.workdir / "orthanc.log"
        self.config_path = self.workdir / "orthanc.json"
        self.process: subprocess.Popen | None = None
        self._started_once = False
        self._log_offset = 0

    # -- lifecycle ---------------------------------------------------------------------

    def config(self) -> dict[str, Any]:
        storage = self.workdir / "storage"
        return {
            "Name": f"test-{self.aet}",
            "StorageDirectory": str(storage),
            "IndexDirectory": str(storage),
            "Plugins": [],
            "LuaScripts": [],
            "HttpServerEnabled": True,
            "HttpPort": self.http_port,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "OrthancExplorerEnabled": False,
            "WebDavEnabled": False,
            "HttpThreadsCount": 4,
            "DicomServerEnabled": True,
            "DicomAet": self.aet,
            "DicomPort": self.dicom_port,
            "DicomCheckCalledAet": False,
            "DicomAlwaysAllowStore": True,
            "DicomAlwaysAllowEcho": True,
            "DicomModalities": {},
            "OrthancPeers": {},
            "DicomThreadsCount": 2,
            "StableAge": 1,
            "SaveJobs": False,
            "MetricsEnabled": False,
            "DeidentifyLogs": False,
        }

    def start(self) -> Orthanc:
        """Start (or restart, on the same ports and storage) and wait until both servers answer."""
        if self.running:
            return self
        # free_port() can race with another test process; the first start may pick new ports.
        attempts = 1 if self._started_once else 3
        for attempt in range(attempts):
            try:
                self._start_once()
            except PortInUse:
                if attempt == attempts - 1:
                    raise
                self.http_port, self.dicom_port = free_port(), free_port()
            else:
                self._started_once = True
                return self
        raise AssertionError("unreachable")

    def _start_once(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(json.dumps(self.config(), indent=2))
        with self.log_path.open("ab") as log:
            log.write(f"--- starting Orthanc at {time.strftime('%H:%M:%S')} ---\n".encode())
            log.flush()
            self._log_offset = log.tell()
            self.process = subprocess.Popen(
                [ORTHANC, "--verbose", str(self.config_path)],
                cwd=self.workdir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            self._wait_until_up(START_TIMEOUT)
        except BaseException:
            self.stop()
            raise

    def _wait_until_up(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        delay = 0.05
        while True:
            if self.process.poll() is not None:
                with self.log_path.open("rb") as log:
                    log.seek(self._log_offset)
                    this_run = log.read().decode(errors="replace")
                error = PortInUse if "already in use" in this_run else RuntimeError
                raise error(f"Orthanc exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                # Orthanc opens its HTTP port after its DICOM port is listening. Checking the
                # DICOM port it reports guards against another server holding our HTTP port.
                if self.get("/system", timeout=2).get("DicomPort") == self.dicom_port:
                    return
            except (OSError, urllib.error.URLError, ValueError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"Orthanc did not answer within {timeout} s:\n{self.log_tail()}")
            time.sleep(delay)
            delay = min(delay * 2, 0.5)

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            # Orthanc 1.10 takes about 3 s to stop (its HTTP and DICOM servers poll once a second).
            process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def __enter__(self) -> Orthanc:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError as exc:
            return f"(no log: {exc})"

    # -- REST ---------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def _request(self, path: str, data: bytes | None = None, timeout: float = 30) -> bytes:
        request = urllib.request.Request(self.url + path, data=data, method="POST" if data is not None else "GET")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.read()

    def get(self, path: str, timeout: float = 30) -> Any:
        return json.loads(self._request(path, timeout=timeout))

    def post(self, path: str, body: Any, timeout: float = 30) -> Any:
        return json.loads(self._request(path, json.dumps(body).encode(), timeout=timeout))

    def find_instances(self, query: dict[str, str]) -> list[dict]:
        """``/tools/find`` at instance level, each flattened by :meth:`_flatten`."""
        found = self.post("/tools/find", {"Level": "Instance", "Query": query, "Expand": True})
        return [self._flatten(item) for item in found]

    def _flatten(self, instance: dict) -> dict:
        """Orthanc's expanded instance plus its simplified tags at the top level.

        ``/tools/find`` only gives the instance-level main tags; the series/study/patient tags
        (SeriesInstanceUID, Modality, ...) come from ``/instances/{id}/simplified-tags``.
        Orthanc's own fields keep their names: ``ID``, ``ParentSeries``, ``FileSize``, ...
        """
        tags = self.get(f"/instances/{instance['ID']}/simplified-tags")
        return {**tags, **{k: v for k, v in instance.items() if k != "MainDicomTags"}, "MainDicomTags": tags}

    def instances(self) -> list[dict]:
        return self.find_instances({})

    def instances_in_study(self, study_instance_uid: str) -> list[dict]:
        return self.find_instances({"StudyInstanceUID": study_instance_uid})

    def instance_file(self, orthanc_id: str) -> bytes:
        return self._request(f"/instances/{orthanc_id}/file")

    def wait_for_instances(self, study_instance_uid: str, count: int, timeout: float = 30) -> list[dict]:
        """Poll until the study holds at least ``count`` instances; return them."""
        deadline = time.monotonic() + timeout
        delay = 0.05
        while True:
            found = self.instances_in_study(study_instance_uid)
            if len(found) >= count:
                return found
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"study {study_instance_uid} has {len(found)} instance(s) after {timeout} s, "
                    f"expected {count}:\n{self.log_tail()}"
                )
            time.sleep(delay)
            delay = min(delay * 2, 0.5)


RADIOGRAPH = ROOT / "tests" / "fixtures" / "bad" / "mono2.dcm"


def radiograph_copies(directory: Path, n: int, *, study_uid: str | None = None) -> list[Path]:
    """``n`` distinct DX instances of one study (the fixture radiograph under new SOP Instance UIDs)."""
    import pydicom
    from pydicom.uid import generate_uid

    directory.mkdir(parents=True, exist_ok=True)
    study_uid = study_uid or generate_uid()
    series_uid = generate_uid()
    paths = []
    for i in range(n):
        dataset = pydicom.dcmread(RADIOGRAPH)
        dataset.StudyInstanceUID = study_uid
        dataset.SeriesInstanceUID = series_uid
        dataset.SOPInstanceUID = dataset.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        dataset.InstanceNumber = i + 1
        dataset.StudyDate = "20261130"
        path = directory / f"{i:03d}.dcm"
        dataset.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


class ListenerProcess(BackgroundProcess):
    """``manage.py dicom_listener`` as its own process, so a test can kill it as a crash would."""

    def __init__(self, env: dict[str, str], log_path: Path, port: int):
        self.env, self.log_path, self.port = env, log_path, port

    def start(self, timeout: float = 60.0) -> ListenerProcess:
        import sys

        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "manage.py", "dicom_listener", "--port", str(self.port)],
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while f"on 127.0.0.1:{self.port}" not in self.log():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the DICOM listener did not start:\n{self.log()}")
            time.sleep(0.1)
        return self


# -- hostile peers: connections that never become an accepted association ------------------------

A_ASSOCIATE_RQ, P_DATA_TF = 0x01, 0x04


def idle_connections(port: int, n: int, *, host: str = "127.0.0.1") -> list[socket.socket]:
    """``n`` TCP connections to ``host:port`` that never send a byte."""
    return [socket.create_connection((host, port), timeout=10) for _ in range(n)]


def pdu_header(pdu_type: int, length: int) -> bytes:
    """A PDU's first 6 bytes: type, reserved, and the length of what follows (PS3.8 9.3)."""
    return struct.pack(">BBL", pdu_type, 0, length)


def oversized_request(
    port: int, *, declared: int = 2**31, push: int = 32 * 2**20, host: str = "127.0.0.1"
) -> tuple[socket.socket, int]:
    """Connect, declare an A-ASSOCIATE-RQ of ``declared`` bytes and send up to ``push`` bytes of it.

    Returns the socket and how many bytes after the header went out before the listener
    closed the connection (``push`` when it never did).
    """
    sock = socket.create_connection((host, port), timeout=10)
    sock.sendall(pdu_header(A_ASSOCIATE_RQ, declared))
    chunk, sent = bytes(2**20), 0
    try:
        while sent < push:
            sent += sock.send(chunk[: push - sent])
    except OSError:  # reset, broken pipe, or a full window for 10 s: the listener stopped reading
        pass
    return sock, sent


def closed_by_peer(sock: socket.socket) -> bool:
    """True once the other end has closed or reset ``sock``; False while it is open and silent."""
    timeout = sock.gettimeout()
    sock.setblocking(False)  # with a timeout set, recv() would wait for data first
    try:
        return sock.recv(1, socket.MSG_PEEK) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True
    finally:
        sock.settimeout(timeout)


def rss_bytes(pid: int) -> int:
    """Resident memory of process ``pid`` (Linux), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for process {pid}")
