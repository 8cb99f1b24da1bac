"""A grpcio client of Contrail's query service, with stubs generated from proto/contrail.proto
at test time (grpcio-tools).

usage: grpc_client.py ADDRESS PROTO_DIR EXPECTED_WINDOWS.json PROCESSED_COUNT

EXPECTED_WINDOWS.json holds the records of flight-aggregated-data (read by the Rust test as a
read_committed consumer). Checks:
  - ListWindows, paged 4 at a time, returns exactly those windows;
  - Query streams Arrow IPC that pyarrow decodes: the window rows again, and the number of
    processed records in the archive.
Retries while the server answers UNAVAILABLE (the live store warming up), up to 60 s.
"""
import datetime as dt
import importlib
import json
import math
import os
import sys
import tempfile
import time

import grpc
import grpc_tools
import pyarrow as pa
import pyarrow.ipc
from grpc_tools import protoc


def stubs(proto_dir):
    out = tempfile.mkdtemp(prefix="contrail-stubs-")
    wkt = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
    rc = protoc.main(["protoc", f"-I{proto_dir}", f"-I{wkt}", f"--python_out={out}",
                      f"--grpc_python_out={out}", os.path.join(proto_dir, "contrail.proto")])
    assert rc == 0, f"grpc_tools.protoc failed: {rc}"
    sys.path.insert(0, out)
    return importlib.import_module("contrail_pb2"), importlib.import_module("contrail_pb2_grpc")


def parse_time(s):
    return dt.datetime.fromisoformat(s.replace("Z", "+00:00"))


def close(a, b):
    if a is None or b is None:
        return a is None and b is None
    return math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-9)


def main():
    address, proto_dir, expected_path, processed_count = sys.argv[1:5]
    pb, pb_grpc = stubs(proto_dir)
    with open(expected_path) as f:
        expected = sorted(json.load(f), key=lambda w: w["window_start"])
    assert expected, "the test needs closed windows"
    stub = pb_grpc.ContrailStub(grpc.insecure_channel(address))

    deadline = time.time() + 60
    windows, token = [], ""
    while True:
        try:
            page = stub.ListWindows(pb.ListWindowsRequest(limit=4, page_token=token))
        except grpc.RpcError as e:
            if e.code() == grpc.StatusCode.UNAVAILABLE and time.time() < deadline:
                time.sleep(0.5)
                continue
            raise
        windows.extend(page.windows)
        token = page.next_page_token
        if not token:
            break
    assert len(windows) == len(expected), (len(windows), len(expected))
    fields = ["event_count", "anomaly_count", "unique_aircraft"]
    optional = ["avg_velocity", "min_velocity", "max_velocity", "avg_altitude", "min_altitude",
                "max_altitude", "avg_anomaly_score"]
    for got, want in zip(windows, expected):
        start = got.window_start.ToDatetime(tzinfo=dt.timezone.utc)
        end = got.window_end.ToDatetime(tzinfo=dt.timezone.utc)
        assert start == parse_time(want["window_start"]), (start, want)
        assert end == parse_time(want["window_end"]), (end, want)
        for f in fields:
            assert getattr(got, f) == want[f], (f, got, want)
        for f in optional:
            value = getattr(got, f) if got.HasField(f) else None
            assert close(value, want[f]), (f, value, want[f])

    def query(sql):
        chunks, truncated = [], False
        for m in stub.Query(pb.QueryRequest(sql=sql)):
            chunks.append(m.arrow_ipc)
            truncated = truncated or m.truncated
        assert not truncated
        return pa.ipc.open_stream(pa.py_buffer(b"".join(chunks))).read_all()

    table = query("SELECT window_start, event_count FROM windows ORDER BY window_start")
    assert table.num_rows == len(expected), table
    assert table.column("event_count").to_pylist() == [w["event_count"] for w in expected]
    assert [t.isoformat() for t in table.column("window_start").to_pylist()] == \
        [parse_time(w["window_start"]).isoformat() for w in expected]

    n = query("SELECT count(*) AS n FROM processed").column("n")[0].as_py()
    assert n == int(processed_count), (n, processed_count)
    print(f"grpc client: {len(windows)} windows equal the topic's; Query: {n} processed rows")


if __name__ == "__main__":
    main()
