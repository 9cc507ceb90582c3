#!/usr/bin/env python3
"""End-to-end time of a theme edit's re-tag on stored feedback.

usage: python benches/retag_themes.py target/release/verbatim [ITEMS]   (default 3000)

Starts the real binary (analysis on, a fresh data dir), ingests ITEMS items (sentences of
benches/data/themes/mams-acsa-train.tsv and banking77-train.tsv, alternating, 1,000 per Ingest), waits
until they are analysed and indexed (Stats: analysis_backlog 0, retag_backlog 0, index_lag 0),
then adds one theme with UpsertTheme and times, from the answer, until Stats says every analysed
item carries the new taxonomy version and the index has caught up (retag_backlog 0 and
index_lag 0): the re-tag reads the stored int8 units, re-scores them (no encoder), writes the
themes back through the store writer and the index re-indexes the items. Prints the stored units
per item and the time per item and per unit, to compare with the compute-only figure of
`cargo bench --bench load -- themes`.

Needs grpcio + grpcio-tools (the venv of tests/blackbox/run.sh) and models/cache.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import verbatim_harness as h  # noqa: E402

DATA = Path(__file__).resolve().parent / "data" / "themes"


def texts(n: int) -> list[str]:
    """Restaurant and bank sentences, alternating."""
    pools = []
    for name in ("mams-acsa-train.tsv", "banking77-train.tsv"):
        rows = (DATA / name).read_text("utf-8").splitlines()[1:]
        pools.append([r.split("\t")[0] for r in rows if r.strip()])
    return [pools[i % 2][(i // 2) % len(pools[i % 2])] for i in range(n)]


def wait_settled(stub, pb, what: str, timeout: float = 1800.0) -> tuple[float, object]:
    started = time.monotonic()
    while True:
        s = stub.Stats(pb.StatsRequest(), timeout=30)
        if s.analysis_backlog == 0 and s.retag_backlog == 0 and s.index_lag == 0:
            return time.monotonic() - started, s
        if time.monotonic() - started > timeout:
            raise h.HarnessError(f"{what}: not settled after {timeout:.0f} s: {s}")
        time.sleep(0.05)


def main() -> int:
    h.set_log_tag("retag")
    binary = h.check_binary(Path(sys.argv[1]))
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 3000
    with tempfile.TemporaryDirectory(prefix="verbatim-retag-") as work:
        work = Path(work)
        (work / "stubs").mkdir()
        h.generate_stubs(work / "stubs")
        from verbatim.v1 import feedback_pb2 as pb

        server = h.Server(binary, work)
        try:
            _, stub = h.connect(server.start())
            all_texts = texts(n)
            t0 = time.monotonic()
            for i in range(0, n, 1000):
                items = [pb.Feedback(id=f"r{j}", text=t)
                         for j, t in enumerate(all_texts[i:i + 1000], start=i)]
                stub.Ingest(pb.IngestRequest(items=items), timeout=300)
            analysed, stats = wait_settled(stub, pb, "analysis")
            h.log(f"{n} items ingested and analysed in {time.monotonic() - t0:.1f} s")
            units = 0
            for i in range(0, min(n, 1000), 1000):
                got = stub.Get(pb.GetRequest(ids=[f"r{j}" for j in range(i, min(i + 1000, n))]),
                               timeout=60)
                units += sum(len(x.analysis.sentences) for x in got.items)
            sentences_per_item = units / min(n, 1000)
            theme = pb.Theme(name="Card problems",
                             description="Bank cards that do not arrive, do not work or are declined.",
                             examples=["My card was declined at the shop.",
                                       "The new card still has not arrived.",
                                       "Meine Karte funktioniert nicht."])
            before = stats.taxonomy_version
            t1 = time.monotonic()
            answer = stub.UpsertTheme(pb.UpsertThemeRequest(theme=theme), timeout=60)
            edit = time.monotonic() - t1
            retag, stats = wait_settled(stub, pb, "re-tag")
            assert stats.taxonomy_version == answer.taxonomy_version > before, stats
            tagged = stub.Search(pb.SearchRequest(
                filter=pb.Filter(themes=[answer.theme.id]), limit=1), timeout=60).total_hits
            print(f"## Re-tag after a theme edit ({n} items, ~{sentences_per_item:.2f} sentences "
                  f"per item)\n")
            print(f"- UpsertTheme answered in {edit * 1e3:.0f} ms (embeds 4 texts, recompiles)")
            print(f"- re-tag done and indexed {retag:.2f} s after the answer: "
                  f"{retag / n * 1e6:.0f} us per item, "
                  f"{retag / (n * sentences_per_item) * 1e6:.0f} us per sentence "
                  f"(~{retag / n * 1e6:.0f} s per million items)")
            print(f"- items carrying the new theme: {tagged} of {n}")
        finally:
            server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
