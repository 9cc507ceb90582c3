#!/usr/bin/env python3
"""Black-box checks of a running verbatim server over gRPC.

usage: blackbox_test.py --addr HOST:PORT [--result-file FILE] [--only NAME ...]

Needs the stubs generated from proto/ (verbatim/v1/feedback_pb2*.py) on
PYTHONPATH (tests/blackbox/run.sh arranges this), plus grpcio,
grpcio-health-checking and grpcio-reflection.

Every check is a function named check_*; each runs on its own, failures are
printed with detail, and the counts are written to --result-file as
"PASSED FAILED". Words and ids are random per run so that checks don't see
each other's items (and reruns against the same data dir don't either).
"""

import argparse
import collections
import random
import re
import string
import sys
import time
import traceback

import grpc
from google.protobuf import timestamp_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from verbatim.v1 import feedback_pb2 as pb
from verbatim.v1 import feedback_pb2_grpc as pb_grpc

TIMEOUT = 10  # seconds, deadline of every call
POLL_FOR = 2.0  # seconds to wait for the index to catch up
POLL_EVERY = 0.05
SERVICE = "verbatim.v1.FeedbackService"
ULID_RE = re.compile(r"^[0-9A-HJKMNP-TV-Z]{26}$")

RUN = "".join(random.choices(string.ascii_lowercase, k=6))


class CheckFailed(AssertionError):
    pass


def word():
    """A random word that no other item contains (letters only, so that a
    tokenizer keeps it whole; the 'q' prefix makes it an unlikely English
    word and the stemmer then leaves it alone in practice)."""
    return "q" + RUN + "".join(random.choices(string.ascii_lowercase, k=8))


def uid(prefix):
    return f"bb-{prefix}-{RUN}-{random.getrandbits(48):012x}"


def expect(cond, msg, *details):
    if not cond:
        raise CheckFailed("\n".join([msg] + [str(d) for d in details]))


def expect_eq(got, want, what):
    if got != want:
        raise CheckFailed(f"{what}: got {got!r}, want {want!r}")


def rpc_error(fn, *args, **kwargs):
    """Calls fn and returns the grpc.RpcError it raises; fails if it succeeds."""
    try:
        resp = fn(*args, timeout=TIMEOUT, **kwargs)
    except grpc.RpcError as e:
        return e
    raise CheckFailed(f"expected an error status, got a response: {resp!r}"[:2000])


class BearerToken(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor,
                  grpc.StreamUnaryClientInterceptor, grpc.StreamStreamClientInterceptor):
    """Adds `authorization: Bearer TOKEN` to every call."""

    def __init__(self, token):
        self.token = token

    def _details(self, details):
        metadata = list(details.metadata or []) + [("authorization", f"Bearer {self.token}")]
        return details._replace(metadata=metadata) if hasattr(details, "_replace") else _Details(
            details.method, details.timeout, metadata, details.credentials,
            getattr(details, "wait_for_ready", None), getattr(details, "compression", None))

    def intercept_unary_unary(self, continuation, details, request):
        return continuation(self._details(details), request)

    def intercept_unary_stream(self, continuation, details, request):
        return continuation(self._details(details), request)

    def intercept_stream_unary(self, continuation, details, requests):
        return continuation(self._details(details), requests)

    def intercept_stream_stream(self, continuation, details, requests):
        return continuation(self._details(details), requests)


class _Details(collections.namedtuple("_Details", ("method", "timeout", "metadata", "credentials",
                                                  "wait_for_ready", "compression")),
               grpc.ClientCallDetails):
    pass


class Ctx:
    def __init__(self, addr, token=None):
        self.addr = addr
        self.token = token
        self.raw_channel = grpc.insecure_channel(
            addr,
            options=[
                ("grpc.max_send_message_length", 64 * 1024 * 1024),
                ("grpc.max_receive_message_length", 64 * 1024 * 1024),
            ],
        )
        grpc.channel_ready_future(self.raw_channel).result(timeout=TIMEOUT)
        self.channel = (grpc.intercept_channel(self.raw_channel, BearerToken(token))
                        if token else self.raw_channel)
        self.stub = pb_grpc.FeedbackServiceStub(self.channel)

    # ---- helpers -------------------------------------------------------

    def ingest(self, items):
        return self.stub.Ingest(pb.IngestRequest(items=items), timeout=TIMEOUT)

    def ingest_ok(self, items):
        resp = self.ingest(items)
        bad = [r for r in resp.results if r.WhichOneof("outcome") != "id"]
        expect(not bad and resp.accepted == len(items),
               f"Ingest of {len(items)} valid items was not fully accepted", resp)
        return resp

    def get(self, ids):
        return self.stub.Get(pb.GetRequest(ids=ids), timeout=TIMEOUT)

    def search(self, query="", **kw):
        return self.stub.Search(pb.SearchRequest(query=query, **kw), timeout=TIMEOUT)

    def poll_search(self, pred, what, query="", **kw):
        """Repeats a Search every 50 ms until pred(resp) holds, for at most
        POLL_FOR seconds. Returns (resp, seconds waited)."""
        start = time.monotonic()
        while True:
            resp = self.search(query, **kw)
            if pred(resp):
                return resp, time.monotonic() - start
            if time.monotonic() - start > POLL_FOR:
                raise CheckFailed(
                    f"{what}: not true after {POLL_FOR} s of polling Search(query={query!r}, {kw}); "
                    f"last total_hits={resp.total_hits}, hit ids={[h.item.id for h in resp.hits]}")
            time.sleep(POLL_EVERY)


def fb(text, **kw):
    kw.setdefault("id", uid("x"))
    return pb.Feedback(text=text, **kw)


# ---- checks ----------------------------------------------------------------


def check_api_keys(c):
    """Without the key the API answers UNAUTHENTICATED; health stays open."""
    if not c.token:
        return
    bare = pb_grpc.FeedbackServiceStub(c.raw_channel)
    err = rpc_error(bare.Search, pb.SearchRequest())
    expect_eq(err.code(), grpc.StatusCode.UNAUTHENTICATED, "Search without a key")
    err = rpc_error(bare.Get, pb.GetRequest(ids=["x"]),
                    metadata=[("authorization", "Bearer vb_0123456789ab_nope")])
    expect_eq(err.code(), grpc.StatusCode.UNAUTHENTICATED, "Get with a wrong key")
    stub = health_pb2_grpc.HealthStub(c.raw_channel)
    resp = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=TIMEOUT)
    expect_eq(resp.status, health_pb2.HealthCheckResponse.SERVING, "health without a key")


def check_health_serving(c):
    stub = health_pb2_grpc.HealthStub(c.channel)
    resp = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=TIMEOUT)
    expect_eq(resp.status, health_pb2.HealthCheckResponse.SERVING, "health status of ''")


def check_reflection_lists_service(c):
    stub = reflection_pb2_grpc.ServerReflectionStub(c.channel)
    req = reflection_pb2.ServerReflectionRequest(list_services="")
    responses = list(stub.ServerReflectionInfo(iter([req]), timeout=TIMEOUT))
    expect_eq(len(responses), 1, "number of v1alpha reflection responses")
    r = responses[0]
    expect(r.WhichOneof("message_response") == "list_services_response",
           "v1alpha reflection did not answer list_services", r)
    names = [s.name for s in r.list_services_response.service]
    expect(SERVICE in names, f"{SERVICE} not in reflection service list", names)
    expect("grpc.health.v1.Health" in names, "grpc.health.v1.Health not in reflection service list", names)


def check_ingest_batch_partial_rejection(c):
    w = word()
    ids = [uid("batch") for _ in range(4)]
    items = [
        fb(f"first batch item {w}", id=ids[0], nps=10),
        fb(f"second batch item {w}", id=ids[1], nps=0),
        fb(f"bad batch item {w}", id=ids[2], nps=11),
        fb(f"fourth batch item {w}", id=ids[3]),
    ]
    resp = c.ingest(items)
    expect_eq(len(resp.results), 4, "number of results")
    for i, r in enumerate(resp.results):
        expect_eq(r.index, i, f"results[{i}].index")
    for i in (0, 1, 3):
        r = resp.results[i]
        expect_eq(r.WhichOneof("outcome"), "id", f"results[{i}] outcome ({r})")
        expect_eq(r.id, ids[i], f"results[{i}].id")
    bad = resp.results[2]
    expect_eq(bad.WhichOneof("outcome"), "rejection", f"results[2] outcome ({bad})")
    expect_eq(bad.rejection.field, "nps", "results[2].rejection.field")
    expect(bad.rejection.reason.strip() != "", "results[2].rejection.reason is empty")
    expect_eq(resp.accepted, 3, "accepted")
    expect_eq(resp.rejected, 1, "rejected")
    got = c.get(ids)
    expect_eq([i.id for i in got.items], [ids[0], ids[1], ids[3]], "Get: stored ids")
    expect_eq(list(got.missing_ids), [ids[2]], "Get: missing_ids (the rejected item)")


def check_ingest_generates_ulid(c):
    w = word()
    resp = c.ingest([pb.Feedback(id="", text=f"no id given here {w}")])
    expect_eq(resp.accepted, 1, "accepted")
    r = resp.results[0]
    expect_eq(r.WhichOneof("outcome"), "id", f"outcome ({r})")
    expect(ULID_RE.match(r.id), f"generated id {r.id!r} is not a 26-character ULID")
    got = c.get([r.id])
    expect_eq([i.id for i in got.items], [r.id], "Get of the generated id")
    expect_eq(got.items[0].text, f"no id given here {w}", "text")


def check_unspecified_enums_stored_as_other(c):
    i = uid("enum")
    c.ingest_ok([pb.Feedback(id=i, text=f"no channel given {word()}")])
    got = c.get([i]).items[0]
    expect_eq(pb.Channel.Name(got.channel), "CHANNEL_OTHER", "channel")
    expect_eq(pb.JourneyStage.Name(got.journey_stage), "JOURNEY_STAGE_OTHER", "journey_stage")


def check_get_roundtrip_and_missing(c):
    w = word()
    i = uid("get")
    unknown = uid("unknown")
    created = timestamp_pb2.Timestamp(seconds=1700000000, nanos=123000000)
    item = pb.Feedback(
        id=i,
        text=f"Checkout was slow, but the\tsupport team helped.\nThanks! {w} \u00e9t\u00e9 \U0001F600",
        channel=pb.CHANNEL_SUPPORT_TICKET,
        journey_stage=pb.JOURNEY_STAGE_PURCHASE,
        product="Acme Pro",
        customer_id=uid("cust"),
        created_at=created,
        language="pt-BR",
        nps=7,
        rating=4,
        tags=["vip", "checkout", "Mixed Case"],
        attributes={"region": "emea", "plan": "enterprise"},
    )
    c.ingest_ok([item])
    resp = c.get([unknown, i])
    expect_eq(len(resp.items), 1, "number of items")
    expect_eq(list(resp.missing_ids), [unknown], "missing_ids")
    got = resp.items[0]
    expect_eq(got.id, i, "id")
    expect_eq(got.text, item.text, "text")
    expect_eq(got.channel, item.channel, "channel")
    expect_eq(got.journey_stage, item.journey_stage, "journey_stage")
    expect_eq(got.product, item.product, "product")
    expect_eq(got.customer_id, item.customer_id, "customer_id")
    expect_eq(list(got.tags), list(item.tags), "tags")
    expect_eq(dict(got.attributes), dict(item.attributes), "attributes")
    expect(got.HasField("nps"), "nps is not set")
    expect_eq(got.nps, 7, "nps")
    expect(got.HasField("rating"), "rating is not set")
    expect_eq(got.rating, 4, "rating")
    expect(not got.HasField("csat"), f"csat should be unset, got {got.csat}")
    expect(not got.HasField("ces"), f"ces should be unset, got {got.ces}")
    expect(got.HasField("created_at"), "created_at is not set")
    expect_eq((got.created_at.seconds, got.created_at.nanos), (created.seconds, created.nanos), "created_at")
    expect_eq(got.language, "pt-br", "language (stored lower-cased)")
    expect(got.HasField("ingested_at") and got.ingested_at.seconds > 1700000000,
           "ingested_at is not set to the ingest time", got.ingested_at)


def _search_items(c):
    w = word()
    ids = {k: uid("s" + k) for k in "abcd"}
    items = [
        fb(f"The order was refunded after the late delivery {w}", id=ids["a"],
           channel=pb.CHANNEL_REVIEW, product="Acme"),
        fb(f"Late delivery again, but the driver was friendly {w}", id=ids["b"],
           channel=pb.CHANNEL_SUPPORT_TICKET, product="Acme"),
        fb(f"Delivery was late and nobody answered my emails {w}", id=ids["c"],
           channel=pb.CHANNEL_REVIEW, product="Globex"),
        fb(f"Great product and fast shipping {w}", id=ids["d"],
           channel=pb.CHANNEL_CHAT, product="Globex"),
    ]
    c.ingest_ok(items)
    return w, ids


def check_search(c):
    w, ids = _search_items(c)
    resp, waited = c.poll_search(lambda r: r.total_hits == 4, "all 4 items searchable", w)
    expect_eq(sorted(h.item.id for h in resp.hits), sorted(ids.values()), "hits for the unique word")
    expect_eq(len(resp.next_cursor), 0, "next_cursor with 4 hits and the default limit")
    print(f"  (search: items searchable after {waited * 1000:.0f} ms)")

    # Stemming: "refunds" finds "refunded".
    resp = c.search(f"refunds {w}")
    expect_eq(resp.total_hits, 1, "total_hits for 'refunds'")
    expect_eq([h.item.id for h in resp.hits], [ids["a"]], "hits for 'refunds'")
    hit = resp.hits[0]
    expect(hit.score > 0, f"score of a text query hit should be > 0, got {hit.score}")
    expect(hit.HasField("snippet"), "hit has no snippet")
    expect("<b>" in hit.snippet.html and "</b>" in hit.snippet.html,
           "snippet.html has no <b></b> highlight", hit.snippet)
    frag = hit.snippet.fragment.encode("utf-8")
    expect(len(hit.snippet.highlights) > 0, "snippet has no highlight ranges", hit.snippet)
    for h in hit.snippet.highlights:
        expect(h.start < h.end <= len(frag), f"bad highlight range {h.start}..{h.end}", hit.snippet)

    # Phrase: "late delivery" matches a and b, not c ("Delivery was late").
    resp = c.search(f'"late delivery" {w}')
    expect_eq(resp.total_hits, 2, "total_hits for phrase \"late delivery\"")
    expect_eq(sorted(h.item.id for h in resp.hits), sorted([ids["a"], ids["b"]]), "hits for the phrase")

    # Filter by channel.
    resp = c.search(w, filter=pb.Filter(channels=[pb.CHANNEL_REVIEW]))
    expect_eq(resp.total_hits, 2, "total_hits with channels=[REVIEW]")
    expect_eq(sorted(h.item.id for h in resp.hits), sorted([ids["a"], ids["c"]]), "hits with channels=[REVIEW]")
    for h in resp.hits:
        expect_eq(h.item.channel, pb.CHANNEL_REVIEW, f"channel of hit {h.item.id}")

    # Facets over all matches, independent of the page size.
    resp = c.search(w, facets=["channel"], limit=1)
    expect_eq(resp.total_hits, 4, "total_hits with limit=1")
    expect_eq(len(resp.hits), 1, "number of hits with limit=1")
    expect(resp.next_cursor != "", "next_cursor should be set when more hits remain")
    expect_eq([f.field for f in resp.facets], ["channel"], "facet fields")
    counts = {_norm_channel(fc.value): fc.count for fc in resp.facets[0].counts}
    expect_eq(counts, {"review": 2, "support_ticket": 1, "chat": 1},
              f"channel facet counts (raw: {[(fc.value, fc.count) for fc in resp.facets[0].counts]})")


def _norm_channel(v):
    # The proto does not say how a channel facet value is spelled: accept
    # "CHANNEL_REVIEW", "review" and "REVIEW".
    v = v.lower()
    return v[len("channel_"):] if v.startswith("channel_") else v


def _check_malformed(c, query):
    e = rpc_error(c.stub.Search, pb.SearchRequest(query=query))
    expect_eq(e.code(), grpc.StatusCode.INVALID_ARGUMENT, f"status for query {query!r} (details: {e.details()!r})")
    d = e.details() or ""
    expect(re.search(r"\d", d) and re.search(r"position|byte|offset|column|\bat\b|\bpos\b", d, re.I),
           f"details for query {query!r} do not mention a position: {d!r}")


def check_malformed_query_unclosed_paren(c):
    _check_malformed(c, "text:(refund")


def check_malformed_query_unclosed_quote(c):
    _check_malformed(c, '"unclosed')


def check_idempotent_reingest(c):
    w = word()
    i = uid("idem")
    c.ingest_ok([fb(f"first version {w}", id=i, nps=1)])
    c.poll_search(lambda r: r.total_hits == 1, "first version searchable", w)
    resp = c.ingest_ok([fb(f"second version {w}", id=i, nps=2)])
    expect_eq(resp.results[0].id, i, "id of the re-ingested item")
    got = c.get([i])
    expect_eq(len(got.items), 1, "Get: number of items")
    expect_eq(got.items[0].text, f"second version {w}", "Get: text after re-ingest")
    expect_eq(got.items[0].nps, 2, "Get: nps after re-ingest")
    # The index must end up with exactly the second version.
    # Hits carry the store's current version, so poll on the index itself:
    # the new text must match, and then the old one must not.
    c.poll_search(lambda r: r.total_hits == 1, "second version searchable", f"second {w}")
    resp = c.search(w)
    expect_eq(resp.total_hits, 1, "total_hits for the unique word after re-ingest")
    expect_eq(c.search(f"first {w}").total_hits, 0, "hits for the replaced text")
    # Still one after another refresh interval.
    time.sleep(0.3)
    expect_eq(c.search(w).total_hits, 1, "total_hits for the unique word, 300 ms later")


def check_duplicate_id_in_one_batch(c):
    w = word()
    i = uid("dup")
    resp = c.ingest([fb(f"dup one {w}", id=i), fb(f"dup two {w}", id=i)])
    expect_eq([r.WhichOneof("outcome") for r in resp.results], ["id", "rejection"], "outcomes")
    expect_eq((resp.accepted, resp.rejected), (1, 1), "(accepted, rejected)")
    expect_eq(c.get([i]).items[0].text, f"dup one {w}", "stored text")


def check_delete(c):
    w = word()
    i = uid("del")
    unknown = uid("unknown")
    c.ingest_ok([fb(f"please delete me {w}", id=i)])
    c.poll_search(lambda r: r.total_hits == 1, "item searchable before Delete", w)
    resp = c.stub.Delete(pb.DeleteRequest(ids=[i, unknown]), timeout=TIMEOUT)
    expect_eq(resp.deleted, 1, "deleted")
    expect_eq(list(resp.missing_ids), [unknown], "Delete missing_ids")
    got = c.get([i])
    expect_eq(len(got.items), 0, "Get after Delete: items")
    expect_eq(list(got.missing_ids), [i], "Get after Delete: missing_ids")
    c.poll_search(lambda r: r.total_hits == 0 and not r.hits, "deleted item gone from search", w)


def check_ingest_over_1000_items(c):
    w = word()
    ids = [uid("big") for _ in range(1001)]
    req = pb.IngestRequest(items=[fb(f"too many {w}", id=i) for i in ids])
    e = rpc_error(c.stub.Ingest, req)
    expect_eq(e.code(), grpc.StatusCode.INVALID_ARGUMENT, f"status (details: {e.details()!r})")
    got = c.get([ids[0], ids[1000]])
    expect_eq(len(got.items), 0, "items stored from the rejected batch")


def check_ingest_stream(c):
    w = word()
    batches = [[fb(f"stream item {n} {w}", id=uid(f"st{s}")) for n in range(200)] for s in range(5)]

    def requests():
        for b in batches:
            yield pb.IngestRequest(items=b)

    acks = list(c.stub.IngestStream(requests(), timeout=TIMEOUT))
    expect_eq([a.sequence for a in acks], [0, 1, 2, 3, 4], "ack sequences")
    for a, b in zip(acks, batches):
        expect_eq((a.accepted, a.rejected), (200, 0), f"ack {a.sequence} (accepted, rejected)")
        expect_eq(len(a.results), 200, f"ack {a.sequence} number of results")
        expect_eq([r.id for r in a.results], [f.id for f in b], f"ack {a.sequence} result ids")
    probe = [batches[0][0].id, batches[4][199].id]
    got = c.get(probe)
    expect_eq([i.id for i in got.items], probe, "Get of streamed items")
    c.poll_search(lambda r: r.total_hits == 1000, "1000 streamed items searchable", w)


def check_delete_customer(c):
    w = word()
    cust, other = uid("cust"), uid("other")
    mine = [uid("dc") for _ in range(3)]
    keep = uid("dck")
    c.ingest_ok([fb(f"customer item {n} {w}", id=i, customer_id=cust,
                    channel=pb.CHANNEL_EMAIL) for n, i in enumerate(mine)]
                + [fb(f"other customer item {w}", id=keep, customer_id=other)])
    flt = pb.Filter(customer_id=cust)
    c.poll_search(lambda r: r.total_hits == 3, "customer's items searchable", w, filter=flt)
    resp = c.stub.DeleteCustomer(pb.DeleteCustomerRequest(customer_id=cust), timeout=TIMEOUT)
    expect_eq(resp.deleted, 3, "deleted")
    got = c.get(mine + [keep])
    expect_eq([i.id for i in got.items], [keep], "Get after DeleteCustomer: remaining items")
    expect_eq(sorted(got.missing_ids), sorted(mine), "Get after DeleteCustomer: missing_ids")
    c.poll_search(lambda r: r.total_hits == 0 and not r.hits, "customer's items gone from search",
                  "", filter=flt)
    # Facets must forget the customer as well.
    resp, _ = c.poll_search(lambda r: r.total_hits == 1, "only the other customer's item left", w,
                            facets=["customer_id"])
    values = [fc.value for f in resp.facets for fc in f.counts]
    expect(cust not in values, "erased customer_id still in facets", values)


def check_report(c):
    tag = uid("rep")
    items = [fb(f"report check {tag} item {i}", nps=i % 11, csat=1 + i % 5, tags=[tag])
             for i in range(22)]
    c.ingest_ok(items)
    c.poll_search(lambda r: r.total_hits == 22, "report items searchable",
                  filter=pb.Filter(tags=[tag]))
    r = c.stub.Report(pb.ReportRequest(filter=pb.Filter(tags=[tag]), segment="channel"),
                      timeout=TIMEOUT)
    expect_eq(r.items, 22, "Report.items")
    answers = [i % 11 for i in range(22)]
    promoters = sum(a >= 9 for a in answers)
    detractors = sum(a <= 6 for a in answers)
    want = 100.0 * (promoters - detractors) / 22
    expect(r.nps.HasField("value") and abs(r.nps.value - want) < 1e-9,
           f"Report.nps.value should be {want}", r.nps)
    expect(r.nps.ci_low < r.nps.value < r.nps.ci_high and r.nps.n == 22,
           "Report.nps interval and n", r.nps)
    expect(not r.ces.HasField("value") and r.ces.n == 0,
           "Report.ces without answers has no value", r.ces)
    e = rpc_error(c.stub.Report, pb.ReportRequest(segment="colour"))
    expect(e.code() == grpc.StatusCode.INVALID_ARGUMENT and e.details().startswith("segment:"),
           "Report with an unknown segment: INVALID_ARGUMENT naming `segment`", e.code(), e.details())


CHECKS = [v for k, v in list(globals().items()) if k.startswith("check_") and callable(v)]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--addr", required=True, help="HOST:PORT of a running verbatim server")
    ap.add_argument("--token", help="API key sent as `authorization: Bearer TOKEN`")
    ap.add_argument("--result-file", help='write "PASSED FAILED" here')
    ap.add_argument("--only", nargs="*", help="run only checks whose name contains one of these")
    args = ap.parse_args()

    checks = CHECKS
    if args.only:
        checks = [f for f in CHECKS if any(o in f.__name__ for o in args.only)]

    passed = failed = 0
    try:
        ctx = Ctx(args.addr, args.token)
    except Exception as e:  # noqa: BLE001
        print(f"FAIL connect to {args.addr}: {e!r}")
        ctx = None
        failed = len(checks)
    if ctx is not None:
        for f in checks:
            name = f.__name__[len("check_"):]
            t0 = time.monotonic()
            try:
                f(ctx)
            except CheckFailed as e:
                failed += 1
                print(f"FAIL {name}: {e}")
            except grpc.RpcError as e:
                failed += 1
                print(f"FAIL {name}: unexpected gRPC error {e.code()}: {e.details()!r}")
            except Exception:  # noqa: BLE001
                failed += 1
                print(f"FAIL {name}: unexpected exception")
                traceback.print_exc(file=sys.stdout)
            else:
                passed += 1
                print(f"ok   {name} ({(time.monotonic() - t0) * 1000:.0f} ms)")
            sys.stdout.flush()
    # Not the "N passed, M failed" form on purpose: run.sh prints the one
    # summary line for the whole run.
    print(f"python checks: {passed} ok, {failed} failing")
    if args.result_file:
        with open(args.result_file, "w") as fh:
            fh.write(f"{passed} {failed}\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
