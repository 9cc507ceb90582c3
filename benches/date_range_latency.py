#!/usr/bin/env python3
"""Latency of date-sorted searches with and without a `created_at` range,
one client, sequential calls (benches/date-range-sort.sh runs it; BENCHMARKS.md
"Date sorts within a date range").

    PYTHON benches/date_range_latency.py PORT [CALLS] [SERVER_PID]

Needs grpcio and grpcio-tools (the venv of tests/blackbox/run.sh). The items
are those of `benches/random_items.py ... dated` (dates from 2025-01-05 to
2025-11-01). Prints per case the median and p90 of CALLS calls (default
150, after one warm-up call) and the total the server reported (a report's
items in its period). Searches: IDS view, 10 hits. With SERVER_PID (Linux),
also the server's CPU time per call (every thread's, from
/proc/PID/task/*/schedstat).
"""
import datetime
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import verbatim_harness  # noqa: E402

port = sys.argv[1]
calls = int(sys.argv[2]) if len(sys.argv) > 2 else 150
server_pid = sys.argv[3] if len(sys.argv) > 3 else None


def server_cpu_ns():
    """The server's CPU time so far, every thread's (0 without SERVER_PID)."""
    if server_pid is None:
        return 0
    total = 0
    for stat in Path(f"/proc/{server_pid}/task").glob("*/schedstat"):
        try:
            total += int(stat.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            pass  # a thread that ended meanwhile
    return total
verbatim_harness.generate_stubs(Path(tempfile.mkdtemp()))
import grpc  # noqa: E402
from google.protobuf.timestamp_pb2 import Timestamp  # noqa: E402
from verbatim.v1 import feedback_pb2 as pb  # noqa: E402
from verbatim.v1 import feedback_pb2_grpc as rpc  # noqa: E402

NEWEST, OLDEST, IDS = 2, 3, 3


def at(day):
    stamp = Timestamp()
    stamp.FromDatetime(datetime.datetime.fromisoformat(day))
    return stamp


def window(after=None, before=None):
    dates = pb.Filter()
    if after:
        dates.created_after.CopyFrom(at(after))
    if before:
        dates.created_before.CopyFrom(at(before))
    return dates


def request(sort, after=None, before=None, up_to=0, facets=()):
    return pb.SearchRequest(filter=window(after, before), sort=sort, limit=10, view=IDS,
                            track_total_hits_up_to=up_to, facets=list(facets))


def report(after, before, compare_after, compare_before):
    return pb.ReportRequest(filter=window(after, before), compare_after=at(compare_after),
                            compare_before=at(compare_before))


CASES = [
    ("newest, no range", request(NEWEST)),
    ("newest, March", request(NEWEST, "2025-03-01", "2025-04-01")),
    ("oldest, March", request(OLDEST, "2025-03-01", "2025-04-01")),
    ("newest, March, up to 100", request(NEWEST, "2025-03-01", "2025-04-01", 100)),
    ("oldest, March, up to 100", request(OLDEST, "2025-03-01", "2025-04-01", 100)),
    ("newest, 2 days", request(NEWEST, "2025-03-01", "2025-03-03")),
    ("newest, 2 days, up to 100", request(NEWEST, "2025-03-01", "2025-03-03", 100)),
    ("newest, from October", request(NEWEST, "2025-10-01")),
    ("newest, before February", request(NEWEST, None, "2025-02-01")),
    ("newest, before February, up to 100", request(NEWEST, None, "2025-02-01", 100)),
    ("newest, March, channel facet", request(NEWEST, "2025-03-01", "2025-04-01",
                                              facets=["channel"])),
    ("report, March against February", report("2025-03-01", "2025-04-01",
                                              "2025-02-01", "2025-03-01")),
]

stub = rpc.FeedbackServiceStub(grpc.insecure_channel(f"127.0.0.1:{port}"))
for name, req in CASES:
    call = stub.Report if isinstance(req, pb.ReportRequest) else stub.Search
    call(req)
    took = []
    cpu = server_cpu_ns()
    for _ in range(calls):
        start = time.perf_counter()
        reply = call(req)
        took.append((time.perf_counter() - start) * 1000)
    cpu = (server_cpu_ns() - cpu) / calls / 1e6
    took.sort()
    total = reply.items if call == stub.Report else reply.total_hits
    print(f"{name:36s} median {statistics.median(took):6.2f} ms  "
          f"p90 {took[int(0.9 * calls)]:6.2f} ms  "
          + (f"server CPU {cpu:6.3f} ms  " if server_pid else "")
          + f"total {total}")
