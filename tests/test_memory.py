"""Large transfers stream: 1 GiB up and down grows the client's memory by less than 64 MiB.

The client runs in a child process (so the sandbox's own buffers are not
counted) and reports its peak resident size (VmHWM) after each transfer.  The
peak is reset after warm-up through /proc/self/clear_refs: ru_maxrss would
carry the parent's peak across fork and exec and hide any growth below it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from conftest import env_with_key

GIB = 1024 ** 3
LIMIT = 64 * 1024 * 1024

CHILD = textwrap.dedent("""
    import json, os, sys
    from newport_api import NewportClient
    def peak():
        with open("/proc/self/status") as status:
            line = next(line for line in status if line.startswith("VmHWM:"))
        return int(line.split()[1]) * 1024
    def reset_peak():
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")
    base_url, source, dest = sys.argv[1:4]
    client = NewportClient(os.environ["NEWPORT_API_KEY"], base_url)
    client.get_upload_policy()  # warm up imports and the connection pool
    reset_peak()
    before = peak()
    uploaded = client.upload_file(source)
    after_upload = peak()
    reset_peak()
    client.download(uploaded.url, dest)
    after_download = peak()
    print(json.dumps({"before": before, "upload": after_upload, "download": after_download}))
""")


def test_a_gib_up_and_down_keeps_memory_flat(sandbox, tmp_path):
    source = tmp_path / "big.mp4"
    with open(source, "wb") as handle:
        handle.truncate(GIB)  # sparse: reads as zeros without using the disk
    dest = tmp_path / "back.mp4"
    child = subprocess.run([sys.executable, "-c", CHILD, sandbox.base_url, str(source), str(dest)],
                           env=env_with_key(), capture_output=True, text=True, timeout=300,
                           check=False)
    assert child.returncode == 0, child.stderr
    peaks = json.loads(child.stdout)
    assert peaks["upload"] - peaks["before"] < LIMIT, peaks
    assert peaks["download"] - peaks["before"] < LIMIT, peaks
    assert dest.stat().st_size == GIB
