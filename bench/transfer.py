"""Row 2: upload and download of 1 GiB over loopback, ``NewportClient`` against ``curl``.

Both talk to the same sandbox (running in the orchestrator's process) in the same run:

* upload: ours is ``NewportClient.upload_file`` (get_policy, the multipart POST to the
  storage host, policy_upload_finish); curl is ``curl -F`` of the same policy fields,
  file last, to the same storage host (its policy is fetched beforehand, untimed).
* upload to a discard sink (``sink.py``): the storage POST alone, ours
  (``NewportClient._post_to_storage``) vs ``curl -F`` of the same fields, to a raw-socket
  server that only counts the bytes: neither side is held back by the sandbox's parser.
* download: ours is ``NewportClient.download`` of the stored object's signed URL
  (streamed to ``.part``, fsynced, renamed); curl is ``curl -o`` of the same URL.

Runs alternate (curl, ours, ours, curl), dirty pages are flushed before each run and
stored or downloaded copies are deleted afterwards, so no run pays for another's
writes; each side's median (of two: their mean) counts, and every run is shown.
Ours runs in a child process per transfer, which reports how far its peak resident
size grew during the transfer.  The peak is /proc/self/status ``VmHWM``, reset after
warming up: ``ru_maxrss`` (tests/test_memory.py) starts a child at its parent's peak
(Linux carries it across exec), which hides any growth below that.
"""

from __future__ import annotations

import json
import resource
import secrets
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common import (
    API_KEY,
    MIB,
    REPO_ROOT,
    BenchError,
    Child,
    Row,
    Timed,
    display_command,
    listed,
    median,
    memory_kib,
    rate_text,
    ratio_text,
    reset_peak,
    run_timed,
    say,
    settle_disk,
)
from sink import DiscardSink

# The storage POST's form fields, the same for curl and ours against the sink (which reads none of them).
SINK_FIELDS = {"policy": "bench-policy", "OSSAccessKeyId": "bench-access-id", "signature": "bench-signature"}
GOAL_RATIO = 1.0
GOAL_GROWTH = 64 * MIB
CURL = ("curl", "-sS", "--noproxy", "*")
CURL_SHOWN = "curl -sS --noproxy '*'"


# -- ours, in a child process ------------------------------------------------------------------------


class OursChild:
    """One NewportClient, warmed up (imports, connection pool) before anything is measured."""

    def __init__(self, base_url: str) -> None:
        sys.path.insert(0, str(REPO_ROOT))
        from newport_api import NewportClient

        self.client = NewportClient(API_KEY, base_url)
        self.client.get_upload_policy()

    def measured(self, work: Any) -> dict[str, Any]:
        reset_peak()
        before, usage = memory_kib("VmRSS"), resource.getrusage(resource.RUSAGE_SELF)
        started = time.monotonic()
        result = work()
        seconds = time.monotonic() - started
        after = resource.getrusage(resource.RUSAGE_SELF)
        return {"seconds": seconds, "growth": (memory_kib("VmHWM") - before) * 1024, "result": result,
                "cpu_user": after.ru_utime - usage.ru_utime, "cpu_sys": after.ru_stime - usage.ru_stime}

    def upload(self, path: str) -> dict[str, Any]:
        return self.measured(lambda: self.client.upload_file(path).url)

    def upload_to_sink(self, path: str, sink_url: str) -> dict[str, Any]:
        """The storage POST alone (the multipart body streamed from disk), to the discard sink."""
        from newport_api.models import UploadPolicy

        policy = UploadPolicy(access_id=SINK_FIELDS["OSSAccessKeyId"], policy=SINK_FIELDS["policy"],
                              signature=SINK_FIELDS["signature"], dir="bench/", host=sink_url, expire=0.0,
                              callback="", req_id="")
        source = Path(path)
        size = source.stat().st_size
        return self.measured(lambda: self.client._post_to_storage(policy, source, size, None))

    def download(self, url: str, dest: str) -> dict[str, Any]:
        return self.measured(lambda: str(self.client.download(url, dest)))


def child_main(base_url: str) -> int:
    from common import serve_requests

    ours = OursChild(base_url)
    serve_requests({"upload": ours.upload, "download": ours.download, "upload_to_sink": ours.upload_to_sink})
    return 0


# -- curl against the sandbox's storage (also used by end_to_end.py) ----------------------------------


def curl_upload(base_url: str, path: Path) -> tuple[Timed, str]:
    """``curl -F`` of a fresh policy's fields, file last, to its storage host; returns the reqId too."""
    from newport_api import NewportClient

    with NewportClient(API_KEY, base_url) as client:
        policy = client.get_upload_policy()
    key = policy.key or f"{policy.dir}{secrets.token_hex(4)}_curl{path.suffix}"
    fields = {"key": key, "policy": policy.policy, "OSSAccessKeyId": policy.access_id,
              "signature": policy.signature, "callback": policy.callback, "success_action_status": "200"}
    form = [item for name, value in fields.items() if value for item in ("-F", f"{name}={value}")]
    shown = " ".join(f"-F {name}={value if name == 'success_action_status' else '$' + name.upper()}"
                     for name, value in fields.items() if value)
    label = f"{CURL_SHOWN} -o - {shown} -F file=@{display_command([path])} $STORAGE_HOST"
    timed = run_timed([*CURL, "-o", "-", *form, "-F", f"file=@{path}", policy.host], label=label)
    try:
        answer = json.loads(timed.output)
    except ValueError:
        answer = {}
    if answer.get("code") != 0:
        raise BenchError(f"curl's upload was refused: {timed.output[:300]}")
    return timed, str(answer["data"]["reqId"])


def curl_upload_to_sink(sink_url: str, path: Path) -> float:
    """``curl -F`` of the same fields as ours, file last, to the discard sink."""
    fields = {"key": f"bench/curl{path.suffix}", **SINK_FIELDS, "success_action_status": "200"}
    form = [item for name, value in fields.items() for item in ("-F", f"{name}={value}")]
    shown = " ".join(f"-F {name}=…" for name in fields)
    label = f"{CURL_SHOWN} -o - {shown} -F file=@{display_command([path])} $SINK"
    timed = run_timed([*CURL, "-o", "-", *form, "-F", f"file=@{path}", sink_url], label=label)
    if '"code": 0' not in timed.output:
        raise BenchError(f"curl's upload to the sink failed: {timed.output[:300]}")
    return timed.seconds


def stored_url(base_url: str, req_id: str) -> str:
    """The signed URL of an object curl uploaded (policy_upload_finish, as the client does)."""
    from newport_api import NewportClient

    with NewportClient(API_KEY, base_url) as client:
        data = client.transport.call_api("/api/file/v1/policy_upload_finish", json_body={"reqId": req_id})
    return str(data["url"])


# -- in the orchestrator -----------------------------------------------------------------------------


@dataclass
class Transfers:
    curl_up: list[float]
    ours_up: list[dict[str, Any]]
    curl_down: list[float]
    ours_down: list[dict[str, Any]]
    curl_sink: list[float]
    ours_sink: list[dict[str, Any]]


class TransferBench:
    def __init__(self, sandbox: Any, data_file: Path, work: Path) -> None:
        self.sandbox = sandbox
        self.data_file = data_file
        self.size = data_file.stat().st_size
        self.work = work
        self.objects = work / "storage" / "objects"
        self.kept: set[Path] = set()

    def ours(self, action: str, **arguments: Any) -> dict[str, Any]:
        settle_disk()
        with Child("transfer_ours", "transfer.py", "child", self.sandbox.base_url) as child:
            answer = child.request(action, **arguments)
        return answer

    def forget_new_objects(self) -> None:
        for path in self.objects.iterdir():
            if path not in self.kept:
                path.unlink()

    def curl_upload(self) -> float:
        settle_disk()
        timed, _ = curl_upload(self.sandbox.base_url, self.data_file)
        self.forget_new_objects()
        return timed.seconds

    def ours_upload(self) -> dict[str, Any]:
        answer = self.ours("upload", path=str(self.data_file))
        if not self.kept:
            self.kept = set(self.objects.iterdir())  # the first upload is the download's source
        self.forget_new_objects()
        return answer

    def curl_download(self, url: str) -> float:
        dest = self.work / "curl.bin"
        settle_disk()
        timed = run_timed([*CURL, "-o", dest, url], label=f"{CURL_SHOWN} -o $TMP/curl.bin $OBJECT_URL")
        self.check_and_remove(dest)
        return timed.seconds

    def ours_download(self, url: str) -> dict[str, Any]:
        dest = self.work / "ours.bin"
        answer = self.ours("download", url=url, dest=str(dest))
        self.check_and_remove(dest)
        return answer

    def check_and_remove(self, path: Path) -> None:
        size = path.stat().st_size
        path.unlink()
        if size != self.size:
            raise BenchError(f"downloaded {size} bytes, expected {self.size}")

    def run(self) -> Transfers:
        say(f"transfer: 1 GiB up, curl and ours alternating ({self.sandbox.storage_origin})")
        curl_up, ours_up = [self.curl_upload()], []
        ours_up += [self.ours_upload(), self.ours_upload()]
        curl_up.append(self.curl_upload())
        url = ours_up[0]["result"]
        say("transfer: 1 GiB down, curl and ours alternating")
        curl_down = [self.curl_download(url)]
        ours_down = [self.ours_download(url)]
        ours_down.append(self.ours_download(url))
        curl_down.append(self.curl_download(url))
        curl_sink, ours_sink = self.run_sink()
        return Transfers(curl_up, ours_up, curl_down, ours_down, curl_sink, ours_sink)

    def run_sink(self) -> tuple[list[float], list[dict[str, Any]]]:
        """1 GiB up to a sink that only counts bytes, curl and ours alternating (curl, ours, ours, curl)."""
        with DiscardSink() as sink:
            say(f"transfer: 1 GiB up to a discard sink, curl and ours alternating ({sink.url})")
            curl = [curl_upload_to_sink(sink.url, self.data_file)]
            ours = [self.ours("upload_to_sink", path=str(self.data_file), sink_url=sink.url) for _ in range(2)]
            curl.append(curl_upload_to_sink(sink.url, self.data_file))
            if len(sink.bodies) != 4 or min(sink.bodies) < self.size:
                raise BenchError(f"the sink received bodies of {sink.bodies} bytes, expected 4 over {self.size}")
        return curl, ours


def warm_page_cache(path: Path) -> None:
    """Read the file once, in pieces (a whole read would raise this process's peak, see above)."""
    with open(path, "rb") as source:
        while source.read(16 * MIB):
            pass


def measure(data_file: Path) -> list[Row]:
    from newport_api.sandbox import Sandbox

    with (tempfile.TemporaryDirectory(prefix="talking_face_bench_transfer_") as work,
          Sandbox(processing_seconds=0, storage_dir=Path(work) / "storage") as sandbox):
        warm_page_cache(data_file)
        results = TransferBench(sandbox, data_file, Path(work)).run()
    return rows(results, data_file.stat().st_size)


def speed_row(what: str, size: int, ours: list[dict[str, Any]], curl: list[float]) -> Row:
    ours_s = median([run["seconds"] for run in ours])
    curl_s = median(curl)
    return Row(f"2. {what} 1 GiB, throughput",
               f"{rate_text(size, ours_s)} ({listed([run['seconds'] for run in ours])})",
               f"curl: {rate_text(size, curl_s)} ({listed(curl)})",
               ratio_text(curl_s / ours_s), f"≥ {GOAL_RATIO:.1f}× curl", curl_s / ours_s >= GOAL_RATIO)


def rows(results: Transfers, size: int) -> list[Row]:
    growth = max(run["growth"] for run in results.ours_up + results.ours_down + results.ours_sink)
    return [
        speed_row("upload", size, results.ours_up, results.curl_up),
        speed_row("upload to a discard sink (storage POST only)", size, results.ours_sink, results.curl_sink),
        speed_row("download", size, results.ours_down, results.curl_down),
        Row("2. peak memory growth, 1 GiB up and down",
            f"+{growth / MIB:.1f} MiB (peak VmHWM over VmRSS before)", "— (an absolute goal)", "—",
            f"< {GOAL_GROWTH // MIB} MiB", growth < GOAL_GROWTH),
    ]


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "child":
        sys.exit(child_main(sys.argv[2]))
    sys.exit("transfer.py is run by bench/run.py")
