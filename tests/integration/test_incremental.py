"""Pay once per picture, on real Airflow (``airflow dags test``): a nightly DAG over a catalogue run twice
pays nothing the second night; a changed photo, and only it, is segmented again; the coins and jobs reach
a StatsD server on 127.0.0.1 through Airflow's own metrics, each job counted once."""

from __future__ import annotations

import json
import socket
import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.catalogue import make_catalogue, unique_copy

DAG_FILE = Path(__file__).parent / "dags" / "hitpaw_incremental.py"
PREFIX = "airflow.hitpaw."


#: How long :meth:`StatsdListener.take` waits, at most, for its marker (a bound a working run never nears).
PATIENCE = 60.0


class StatsdListener:
    """A StatsD server in miniature: a UDP socket on 127.0.0.1 that keeps every ``name:value|type`` line."""

    def __init__(self) -> None:
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.socket.bind(("127.0.0.1", 0))
        self.socket.settimeout(0.2)
        self.port = self.socket.getsockname()[1]
        self.lines: list[str] = []
        self._received = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._listen, daemon=True)
        self._thread.start()

    def _listen(self) -> None:
        while not self._stop.is_set():
            try:
                packet = self.socket.recv(65535)
            except TimeoutError:
                continue
            with self._received:
                self.lines.extend(packet.decode("utf-8", "replace").splitlines())
                self._received.notify_all()

    def take(self) -> tuple[Counter[str], Counter[str]]:
        """The HitPaw counters (summed) and timers (how many) received since the last take.

        What the finished DAG run sent is on loopback already, ahead of a marker sent now to the same
        socket: everything up to the marker is read, however long the listening thread takes to get there.
        """
        marker = f"hitpaw_test_marker_{uuid.uuid4().hex}:1|c"
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
            sender.sendto(marker.encode(), ("127.0.0.1", self.port))
        with self._received:
            arrived = self._received.wait_for(lambda: marker in self.lines, timeout=PATIENCE)
            assert arrived, f"the StatsD listener did not get its marker within {PATIENCE:g} s"
            end = self.lines.index(marker)
            lines, self.lines = self.lines[:end], self.lines[end + 1 :]
        counters: Counter[str] = Counter()
        timers: Counter[str] = Counter()
        for line in lines:
            name, _, rest = line.partition(":")
            if not name.startswith(PREFIX):
                continue
            value, _, kind = rest.partition("|")
            if kind.startswith("c"):
                counters[name[len(PREFIX) :]] += int(float(value))
            elif kind.startswith("ms"):
                timers[name[len(PREFIX) :]] += 1
        return counters, timers

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self.socket.close()


@pytest.fixture
def statsd() -> Iterator[StatsdListener]:
    listener = StatsdListener()
    yield listener
    listener.close()


def test_a_second_night_pays_nothing_and_a_changed_photo_alone_runs_again(
    hitpaw_emulator: Any, hitpaw_dag_run: Any, tmp_path: Path, statsd: StatsdListener
) -> None:
    photos = make_catalogue(tmp_path / "catalogue", hitpaw_emulator.sample_url("shoe.jpg"))
    heroes = [hitpaw_emulator.sample_url(name) for name in ("portrait.png", "product.webp")]
    out, report = tmp_path / "kept", tmp_path / "report.json"
    conf = {"sources": [str(p) for p in photos], "urls": heroes, "output": str(out), "report": str(report)}
    env = {
        "AIRFLOW__METRICS__STATSD_ON": "True",
        "AIRFLOW__METRICS__STATSD_HOST": "127.0.0.1",
        "AIRFLOW__METRICS__STATSD_PORT": str(statsd.port),
        "AIRFLOW__METRICS__STATSD_PREFIX": "airflow",
    }
    images = len(photos) + len(heroes)

    def night() -> tuple[dict[str, Any], int, Counter[str], Counter[str]]:
        before = len(hitpaw_emulator.state()["jobs"])
        hitpaw_dag_run(DAG_FILE, "hitpaw_incremental", conf=conf, env=env).raise_for_failure()
        paid = len(hitpaw_emulator.state()["jobs"]) - before
        return json.loads(report.read_text()), paid, *statsd.take()

    first, paid, counters, timers = night()
    results = first["catalogue"] + first["heroes"]
    assert paid == images
    assert [r["reused"] for r in results] == [False] * images
    assert all(r["status"] == "COMPLETED" and r["consume_coins"] == 20 for r in results)
    assert counters == {"jobs_submitted": images, "coins_consumed": 20 * images, "jobs_completed": images}
    assert timers == {"job_duration": images}

    second, paid, counters, timers = night()
    assert paid == 0, "the second night paid for images it had kept"
    results = second["catalogue"] + second["heroes"]
    assert [r["reused"] for r in results] == [True] * images
    assert all(r["consume_coins"] == 0 and r["status"] == "COMPLETED" for r in results)
    kept_first = {(r["res_path"], r["mask_path"], r["job_id"]) for r in first["catalogue"] + first["heroes"]}
    assert {(r["res_path"], r["mask_path"], r["job_id"]) for r in results} == kept_first
    assert counters == {"jobs_reused": images}
    assert not timers

    changed = photos[3]
    changed.write_bytes(unique_copy(changed.read_bytes(), ".jpg", 99))
    third, paid, counters, _ = night()
    assert paid == 1
    fresh = [r["source_path"] for r in third["catalogue"] + third["heroes"] if not r["reused"]]
    assert fresh == [str(changed)]
    assert counters == {
        "jobs_submitted": 1,
        "coins_consumed": 20,
        "jobs_completed": 1,
        "jobs_reused": images - 1,
    }
