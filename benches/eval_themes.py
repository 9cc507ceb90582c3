#!/usr/bin/env python3
"""Accuracy evaluation of Verbatim's theme assignment and discovery against labelled public data.

usage: .venv/bin/python benches/eval_themes.py target/release/verbatim [--quick]
           [--datasets builtin,multilingual,user_themes,banking77,clinc150,mams,discovery,cost] [--ks 0,5,10]
           [--split heldout|tune] [--limit N] [--dump DIR]

--split tune scores banking77 / clinc150 / mams on the rows of their SEED splits that no k uses
as a seed (Banking77 fold A, CLINC150 train with its 100 oos queries, MAMS-ACSA train): the split
for design choices and constants. Figures from it are never reported as held out. --limit N
subsamples the scored texts (2000 is what the design notes in src/themes/model.rs quote);
--dump DIR writes every scored text's themes, spans and sentiments as JSON lines.

Needs the venv made by tests/blackbox/run.sh (grpcio + grpcio-tools 1.85.1) and the prepared
models (python3 models/prepare.py -> models/cache/). Talks to the REAL binary through the public
gRPC API only (UpsertTheme, ListThemes, DeleteTheme, Analyze, Ingest, DiscoverThemes).

Data (in the repository, nothing is read from outside it): benches/data/themes/*.tsv (public
data sets, sources and licences in benches/data/themes/README.md), descriptions.tsv (our theme
name + one-line description per category, written from the category names only) and
benches/data/feedback_themes.tsv (our labelled multilingual feedback for the built-in taxonomy).

Protocol (fixed seeds; the splits never seen by the tuning are the ones reported here):
  * banking77: folds by sha256(text)[0] (even = A, odd = B); seeds from fold A, report fold B.
  * clinc150: seeds from train (oos excluded), report on val (100 oos queries included).
  * mams: seeds from train, preferring sentences whose only non-`miscellaneous` aspect is the
    category; report on val; `miscellaneous` is not a theme.
  For each data set and k in --ks: every theme is deleted (ListThemes + DeleteTheme cascade),
  one theme per category is created with UpsertTheme (name + description + k seed examples),
  the held-out texts go through Analyze (64 per request, sequential) and Analysis.themes is read.
  * builtin: a FRESH data directory (the built-in taxonomy as installed), every row of
    feedback_themes.tsv through Analyze; runs first, before anything deletes a theme.
  * multilingual: for each built-in theme with >= 8 non-English rows, a user-defined copy of it
    (its name + description + its first 3 examples, which are English; no counter-examples), and
    the non-English rows of feedback_themes.tsv through Analyze: does it find its sentences in
    other languages (precision / recall of that one theme, micro-averaged over the themes)?
    Two taxonomies: (a) "alone": the copy is the only theme; (b) "in the built-in taxonomy": the
    built-in taxonomy as installed with that one theme replaced by the copy (UpsertTheme on the
    same id, same parent, so its sub-themes stay), restored before the next theme. The built-in
    theme itself on the same rows is shown beside, from the builtin pass.
  * user_themes: 5 themes the built-in taxonomy lacks (benches/data/user_themes.json: name,
    description, 3 English examples each), their 200 sentences in de, fr, es, pt, it
    (user_themes.tsv, 8 per theme and language) among the 312 non-English rows of
    feedback_themes.tsv (about other things): precision / recall of each theme, (a) alone and
    (b) added to the built-in taxonomy as installed (a fresh data directory of its own; the theme
    is deleted again before the next). Written before any figure was measured on it; tunes nothing.
  * discovery: the held-out texts are ingested (Ingest, wait_for_analysis, product = data set
    name), all themes deleted, DiscoverThemes over that product. The API returns candidates with
    representative sentences and their item ids, not the membership of every item, so NMI is
    computed over the representatives' items (cluster = candidate, class = gold label); the
    outlier share is outliers / uncovered as reported by the server.
  * cost: Analyze throughput on the same texts with no theme and with 150 themes (k = 10).

Metrics: per-theme and micro precision / recall / F1 over (text, theme) pairs; top-1 accuracy
(banking77: the first ThemeMention, best score first, equals the gold category; a text with no
theme counts as wrong); clinc150: in-scope recall (gold theme among the text's themes), top-1,
and the share of oos queries given any theme; mams: micro-F1 over (sentence, aspect) pairs and
aspect-sentiment accuracy (argmax of the mention's negative/neutral/positive probabilities vs the
gold polarity, over correctly found pairs).

Prints a Markdown report to stdout (progress on stderr). Exit 0 whatever the scores; 1 on an
error (server start, RPC failure, missing data).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import math
import os
import platform
import random
import shlex
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

from verbatim_harness import BATCH, REPO, HarnessError as EvalError
from verbatim_harness import Server as HarnessServer, analyze_batched, argmax_polarity, call_rpc
from verbatim_harness import connect, generate_stubs, log, pct, prf, set_log_tag

set_log_tag("eval-themes")

DATA = REPO / "benches" / "data" / "themes"
FEEDBACK_THEMES = REPO / "benches" / "data" / "feedback_themes.tsv"
USER_THEMES = REPO / "benches" / "data" / "user_themes.json"
USER_THEME_ROWS = REPO / "benches" / "data" / "user_themes.tsv"

SEED = 20261130
KS = (0, 5, 10)
QUICK_N = 300
MAMS_CATS = ("food", "service", "staff", "price", "ambience", "menu", "place")
ALL_SETS = ("builtin", "multilingual", "user_themes", "banking77", "clinc150", "mams", "discovery",
            "cost")


# ----------------------------------------------------------------------------- data


def read_tsv(path: Path) -> list[dict]:
    if not path.is_file():
        raise EvalError(f"missing data file {path}")
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def fold_of(text: str) -> str:
    return "A" if hashlib.sha256(text.encode("utf-8")).digest()[0] % 2 == 0 else "B"


def sample_k(pool: list[int], k: int, key: str) -> list[int]:
    """Fixed-seed sample of k indices (sorted) from pool (sorted), seeded per category."""
    if k <= 0:
        return []
    rnd = random.Random(f"{SEED}:{key}")
    return sorted(rnd.sample(sorted(pool), min(k, len(pool))))


def subsample(n: int, limit: int | None, key: str) -> list[int]:
    if limit is None or limit >= n:
        return list(range(n))
    return sorted(random.Random(f"{SEED}:sub:{key}").sample(range(n), limit))


def load_descriptions() -> dict[tuple[str, str], tuple[str, str]]:
    return {(r["dataset"], r["category"]): (r["name"], r["description"])
            for r in read_tsv(DATA / "descriptions.tsv")}


def parse_mams(cats: str) -> dict[str, str]:
    out = {}
    for tok in cats.split():
        c, p = tok.rsplit(":", 1)
        out[c] = p
    return out


class Dataset:
    """Categories, seed pools and held-out rows of one data set.

    single-label sets: gold[i] = set with one category ({} for oos); mams: gold[i] = {cat: pol}."""

    def __init__(self, name: str, cats: list[str], seed_texts: list[str], seed_gold: list,
                 test_texts: list[str], test_gold: list):
        self.name, self.cats = name, cats
        self.seed_texts, self.seed_gold = seed_texts, seed_gold
        self.test_texts, self.test_gold = test_texts, test_gold

    def seeds(self, k: int) -> dict[str, list[str]]:
        out = {}
        for c in self.cats:
            if self.name == "mams":
                single = [i for i, g in enumerate(self.seed_gold)
                          if set(g) - {"miscellaneous"} == {c}]
                pool = single if len(single) >= k else [i for i, g in enumerate(self.seed_gold) if c in g]
            else:
                pool = [i for i, g in enumerate(self.seed_gold) if c in g]
            out[c] = [self.seed_texts[i] for i in sample_k(pool, k, c)]
        return out


def tuning_split(ds: Dataset, ks, limit: int | None) -> Dataset:
    """The same data set with its held-out rows replaced by the seed split's rows that no k in
    `ks` uses as a seed (oos rows of CLINC150 train kept): for choosing designs and constants
    without looking at the reported split."""
    used = set()
    for k in ks:
        for texts in ds.seeds(k).values():
            used.update(texts)
    rest = [i for i, t in enumerate(ds.seed_texts) if t not in used]
    texts, gold = [ds.seed_texts[i] for i in rest], [ds.seed_gold[i] for i in rest]
    if ds.name == "clinc150":
        oos = [r["text"] for r in read_tsv(DATA / "clinc150-train.tsv") if r["category"] == "oos"]
        sel = subsample(len(texts), limit, "tune:" + ds.name)
        texts = [texts[i] for i in sel] + oos
        gold = [gold[i] for i in sel] + [set() for _ in oos]
    else:
        sel = subsample(len(texts), limit, "tune:" + ds.name)
        texts, gold = [texts[i] for i in sel], [gold[i] for i in sel]
    if ds.name == "mams":
        gold = [{c: p for c, p in g.items() if c != "miscellaneous"} for g in gold]
    return Dataset(ds.name, ds.cats, ds.seed_texts, ds.seed_gold, texts, gold)


def load_dataset(name: str, limit: int | None) -> Dataset:
    if name == "banking77":
        rows = read_tsv(DATA / "banking77-train.tsv")
        a = [r for r in rows if fold_of(r["text"]) == "A"]
        b = [r for r in rows if fold_of(r["text"]) == "B"]
        cats = sorted({r["category"] for r in rows})
        sel = subsample(len(b), limit, name)
        return Dataset(name, cats, [r["text"] for r in a], [{r["category"]} for r in a],
                       [b[i]["text"] for i in sel], [{b[i]["category"]} for i in sel])
    if name == "clinc150":
        tr = read_tsv(DATA / "clinc150-train.tsv")
        va = read_tsv(DATA / "clinc150-val.tsv")
        cats = sorted({r["category"] for r in tr} - {"oos"})
        tr = [r for r in tr if r["category"] != "oos"]
        # keep every oos query in a quick run: it is what the oos share is about
        ins = [i for i, r in enumerate(va) if r["category"] != "oos"]
        oos = [i for i, r in enumerate(va) if r["category"] == "oos"]
        sel = sorted([ins[i] for i in subsample(len(ins), limit, name)] + oos)
        return Dataset(name, cats, [r["text"] for r in tr], [{r["category"]} for r in tr],
                       [va[i]["text"] for i in sel],
                       [set() if va[i]["category"] == "oos" else {va[i]["category"]} for i in sel])
    if name == "mams":
        tr = read_tsv(DATA / "mams-acsa-train.tsv")
        va = read_tsv(DATA / "mams-acsa-val.tsv")
        sel = subsample(len(va), limit, name)
        return Dataset(name, list(MAMS_CATS), [r["text"] for r in tr],
                       [parse_mams(r["categories"]) for r in tr],
                       [va[i]["text"] for i in sel],
                       [{c: p for c, p in parse_mams(va[i]["categories"]).items()
                         if c != "miscellaneous"} for i in sel])
    raise EvalError(f"unknown data set {name}")


# --------------------------------------------------------------------------- metrics


def multilabel_scores(gold: list[set], pred: list[set], cats) -> tuple[dict, tuple]:
    """per-category (p, r, f1, support, predicted) and micro (p, r, f1, tp, fp, fn)."""
    per = {}
    TP = FP = FN = 0
    for c in cats:
        tp = sum(1 for g, p in zip(gold, pred) if c in g and c in p)
        fp = sum(1 for g, p in zip(gold, pred) if c not in g and c in p)
        fn = sum(1 for g, p in zip(gold, pred) if c in g and c not in p)
        TP, FP, FN = TP + tp, FP + fp, FN + fn
        per[c] = (*prf(tp, fp, fn), tp + fn, tp + fp)
    return per, (*prf(TP, FP, FN), TP, FP, FN)


def nmi(clusters: list, classes: list) -> float:
    """Normalised mutual information (arithmetic mean normalisation, as sklearn's default)."""
    n = len(clusters)
    if n == 0:
        return float("nan")
    cu, cl = Counter(clusters), Counter(classes)
    joint = Counter(zip(clusters, classes))
    mi = sum(nij / n * math.log(n * nij / (cu[u] * cl[v])) for (u, v), nij in joint.items())
    hu = -sum(x / n * math.log(x / n) for x in cu.values())
    hv = -sum(x / n * math.log(x / n) for x in cl.values())
    if hu == 0 and hv == 0:
        return 1.0
    denom = (hu + hv) / 2
    return mi / denom if denom > 0 else 0.0


def nmi_shuffled(clusters: list, classes: list, rounds: int = 20) -> float:
    """NMI of the same cluster sizes with the classes shuffled (fixed seed): what chance scores.
    Many small clusters over many classes score a high NMI by themselves."""
    if not clusters:
        return float("nan")
    rnd = random.Random(f"{SEED}:nmi")
    total = 0.0
    for _ in range(rounds):
        shuffled = list(classes)
        rnd.shuffle(shuffled)
        total += nmi(clusters, shuffled)
    return total / rounds


# --------------------------------------------------------------------------- server


class Server(HarnessServer):
    """Data in work/data-NAME, log in work/server-NAME.log; 180 s to start, 15 s to stop."""

    def __init__(self, binary: Path, work: Path, name: str):
        super().__init__(binary, work, name, start_timeout=180.0, stop_grace=15.0)


class Client:
    RETRY_ON = ("RESOURCE_EXHAUSTED", "UNAVAILABLE")

    def __init__(self, addr: str):
        from verbatim.v1 import feedback_pb2 as pb

        self.pb = pb
        self.edit_times: list[float] = []  # seconds per UpsertTheme
        self.channel, self.stub = connect(addr, max_receive=256 << 20, max_send=64 << 20)
        # A fresh server compiles the built-in taxonomy in the background and Analyze waits for
        # it: wait here, so that no measured request pays for the startup.
        t0 = time.perf_counter()
        self.call("Analyze", pb.AnalyzeRequest(texts=["warm-up"]), "warm-up")
        log(f"server ready (first Analyze after {time.perf_counter() - t0:.1f} s)")

    def call(self, method: str, req, what: str):
        return call_rpc(self.stub, method, req, f"{method} ({what})", retry_on=self.RETRY_ON)

    # -- taxonomy
    def list_themes(self):
        return self.call("ListThemes", self.pb.ListThemesRequest(), "list")

    def delete_all_themes(self) -> int:
        resp = self.list_themes()
        n = 0
        for t in resp.themes:
            if t.parent_id:
                continue  # deleted with its parent (cascade)
            r = self.call("DeleteTheme", self.pb.DeleteThemeRequest(id=t.id, cascade=True), t.id)
            n += len(r.deleted_ids)
        left = self.list_themes().themes
        if left:
            raise EvalError(f"{len(left)} theme(s) left after deleting all: "
                            f"{[t.id for t in left][:5]}")
        return n

    def upsert(self, name: str, description: str, examples: list[str], parent_id: str = "",
               theme_id: str = "", counter_examples: list[str] = ()):
        theme = self.pb.Theme(id=theme_id, name=name, description=description, examples=examples,
                              counter_examples=list(counter_examples), parent_id=parent_id)
        t0 = time.perf_counter()
        out = self.call("UpsertTheme", self.pb.UpsertThemeRequest(theme=theme), name).theme
        self.edit_times.append(time.perf_counter() - t0)
        return out

    # -- analysis
    def analyze(self, texts: list[str], what: str) -> tuple[list, float]:
        """-> per text Analysis (None when rejected), seconds spent in the RPCs."""
        results, spent = analyze_batched(self.stub, self.pb, texts, what, retry_on=self.RETRY_ON,
                                         log_every=10, what="Analyze ({name})")
        return [r.analysis if r.WhichOneof("outcome") == "analysis" else None
                for r in results], spent

    def ingest(self, texts: list[str], ids: list[str], product: str) -> None:
        for start in range(0, len(texts), BATCH):
            items = [self.pb.Feedback(id=i, text=t, product=product)
                     for i, t in zip(ids[start:start + BATCH], texts[start:start + BATCH])]
            resp = self.call("Ingest", self.pb.IngestRequest(items=items, wait_for_analysis=True),
                             f"ingest {product}")
            if resp.rejected:
                log(f"ingest {product}: {resp.rejected} item(s) rejected")
            log(f"ingest {product}: {min(start + BATCH, len(texts))}/{len(texts)}")


# ----------------------------------------------------------------------- evaluations


def build_taxonomy(cl: Client, ds: Dataset, k: int, desc) -> dict[str, str]:
    """Deletes every theme, creates one per category; returns theme id -> category."""
    cl.delete_all_themes()
    seeds = ds.seeds(k)
    id_to_cat = {}
    cl.edit_times = []
    for c in ds.cats:
        name, description = desc[(ds.name, c)]
        theme = cl.upsert(name, description, seeds[c])
        id_to_cat[theme.id] = c
    listed = cl.list_themes()
    if len(listed.themes) != len(ds.cats):
        raise EvalError(f"{ds.name}: {len(listed.themes)} themes listed, {len(ds.cats)} created")
    return id_to_cat


def eval_assignment(cl: Client, ds: Dataset, ks, desc) -> list[str]:
    out = [f"### {ds.name}", ""]
    n_test = len(ds.test_texts)
    out.append(f"- held-out texts: {n_test}; categories (themes): {len(ds.cats)}; seeds per theme: "
               f"k in {list(ks)}")
    summary = ["", "| k | micro P % | micro R % | micro F1 % | "
               + {"banking77": "top-1 acc %", "clinc150": "in-scope recall % | top-1 % | oos given a theme %",
                  "mams": "aspect-sentiment acc %"}[ds.name]
               + " | no theme % | Analyze texts/s |"]
    summary.append("|" + "---|" * (summary[-1].count("|") - 1))
    details = []
    for k in ks:
        t_build = time.perf_counter()
        id_to_cat = build_taxonomy(cl, ds, k, desc)
        t_build = time.perf_counter() - t_build
        et = cl.edit_times
        out.append(f"- k={k}: taxonomy rebuilt in {t_build:.1f} s ({len(et)} UpsertTheme, "
                   f"mean {1000 * sum(et) / max(len(et), 1):.0f} ms, max {1000 * max(et, default=0):.0f} ms)")
        thr = cl.list_themes().threshold
        analyses, secs = cl.analyze(ds.test_texts, f"{ds.name} k={k}")
        keep = [i for i, a in enumerate(analyses) if a is not None]
        gold = [set(ds.test_gold[i]) for i in keep]
        preds, firsts = [], []
        sent_ok = sent_n = 0
        for i in keep:
            a = analyses[i]
            cats = [id_to_cat.get(m.theme_id, f"?{m.theme_id}") for m in a.themes]
            preds.append(set(cats))
            firsts.append(cats[0] if cats else None)
            if ds.name == "mams":
                for m in a.themes:
                    c = id_to_cat.get(m.theme_id)
                    if c in ds.test_gold[i]:
                        sent_n += 1
                        sent_ok += argmax_polarity(m.sentiment) == ds.test_gold[i][c]
        if DUMP is not None:
            dump_analyses(DUMP / f"{ds.name}-k{k}.jsonl", ds, keep, analyses, id_to_cat)
        per, micro = multilabel_scores(gold, preds, ds.cats)
        none_share = sum(1 for p in preds if not p) / max(len(preds), 1)
        row = f"| {k} | {pct(micro[0])} | {pct(micro[1])} | **{pct(micro[2])}** | "
        if ds.name == "banking77":
            top1 = sum(1 for g, f in zip(gold, firsts) if f is not None and f in g) / max(len(gold), 1)
            row += f"**{pct(top1)}** | "
        elif ds.name == "clinc150":
            ins = [j for j, g in enumerate(gold) if g]
            oos = [j for j, g in enumerate(gold) if not g]
            rec = sum(1 for j in ins if gold[j] & preds[j]) / max(len(ins), 1)
            top1 = sum(1 for j in ins if firsts[j] in gold[j]) / max(len(ins), 1)
            oos_any = sum(1 for j in oos if preds[j]) / max(len(oos), 1)
            row += f"**{pct(rec)}** | {pct(top1)} | **{pct(oos_any)}** ({len(oos)} oos) | "
        else:
            row += f"**{pct(sent_ok / max(sent_n, 1))}** ({sent_n} pairs) | "
        row += f"{pct(none_share)} | {len(ds.test_texts) / max(secs, 1e-9):.1f} |"
        summary.append(row)
        rejected = n_test - len(keep)
        if rejected:
            out.append(f"- k={k}: {rejected} text(s) rejected by the server (excluded)")
        details += ["", f"Per theme, k={k} (threshold {thr:g}; support = gold texts, predicted = "
                        "texts given the theme):", "",
                    "| theme | support | predicted | P % | R % | F1 % |", "|---|---|---|---|---|---|"]
        for c in ds.cats:
            p, r, f, sup, npred = per[c]
            details.append(f"| {c} | {sup} | {npred} | {pct(p)} | {pct(r)} | {pct(f)} |")
    out += summary
    if len(ds.cats) > 20:
        # 77 / 150 rows per k: keep the report readable, show the 10 worst themes of the last k
        worst = sorted(((r[2], c) for c, r in per.items() if r[3]), key=lambda x: x[0])[:10]
        out += ["", f"Worst 10 themes by F1 at k={ks[-1]}: "
                + ", ".join(f"{c} {pct(f)}" for f, c in worst)]
    else:
        out += details
    out.append("")
    return out


DUMP: Path | None = None  # --dump DIR


def dump_analyses(path: Path, ds: Dataset, keep, analyses, id_to_cat) -> None:
    """One JSON line per scored text: text, gold, sentences and themes as returned."""

    def sent(s):
        return [round(s.negative, 4), round(s.neutral, 4), round(s.positive, 4)]

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for i in keep:
            a, g = analyses[i], ds.test_gold[i]
            f.write(json.dumps({
                "text": ds.test_texts[i],
                "gold": g if isinstance(g, dict) else sorted(g),
                "sentiment": sent(a.sentiment),
                "sentences": [[x.start, x.end, sent(x.sentiment)] for x in a.sentences],
                "themes": [{"cat": id_to_cat.get(m.theme_id), "score": round(m.score, 4),
                            "sentences": list(m.sentences),
                            "spans": [[x.start, x.end] for x in m.spans],
                            "sentiment": sent(m.sentiment)} for m in a.themes],
            }, ensure_ascii=False) + "\n")


def eval_builtin(cl: Client) -> tuple[list[str], list, list]:
    """-> report lines, the taxonomy as listed (Theme messages), and per row of
    feedback_themes.tsv the set of theme ids Analyze gave it (None when rejected)."""
    rows = read_tsv(FEEDBACK_THEMES)
    listed = cl.list_themes()
    themes = {t.id: t for t in listed.themes}
    parent = {t.id: t.parent_id for t in listed.themes}
    top = lambda tid: parent.get(tid) or tid  # noqa: E731
    texts = [r["text"] for r in rows]
    gold = []
    for r in rows:
        g = {}
        for tok in r["labels"].split():
            if tok == "-":
                continue
            c, p = tok.rsplit(":", 1)
            g[c] = p
        gold.append(g)
    unknown = sorted({c for g in gold for c in g} - set(themes))
    analyses, secs = cl.analyze(texts, "builtin")
    keep = [i for i, a in enumerate(analyses) if a is not None]
    cats = sorted(themes)
    g_sets = [set(gold[i]) for i in keep]
    p_sets = [{m.theme_id for m in analyses[i].themes} for i in keep]
    per, micro = multilabel_scores(g_sets, p_sets, cats)
    # lenient: a theme and its parent count as the same (top-level) theme
    g_top = [{top(c) for c in s} for s in g_sets]
    p_top = [{top(c) for c in s} for s in p_sets]
    _, micro_top = multilabel_scores(g_top, p_top, sorted({top(c) for c in cats}))
    none_rows = [j for j, i in enumerate(keep) if not gold[i]]
    none_given = sum(1 for j in none_rows if p_sets[j]) / max(len(none_rows), 1)
    s_ok = s_n = 0
    for j, i in enumerate(keep):
        for m in analyses[i].themes:
            if m.theme_id in gold[i]:
                s_n += 1
                s_ok += argmax_polarity(m.sentiment) == gold[i][m.theme_id]
    langs = sorted({r["language"] for r in rows})
    out = ["### Built-in taxonomy on benches/data/feedback_themes.tsv", "",
           f"- {len(rows)} labelled texts ({', '.join(langs)}), {len(themes)} built-in themes "
           f"(taxonomy version {listed.taxonomy_version}, threshold {listed.threshold:g}); "
           f"{len(rows) - len(keep)} rejected"]
    if unknown:
        out.append(f"- gold labels that are not built-in theme ids (always missed): {unknown}")
    out += ["", "| view | P % | R % | F1 % |", "|---|---|---|---|",
            f"| exact theme | {pct(micro[0])} | {pct(micro[1])} | **{pct(micro[2])}** |",
            f"| sub-theme = its parent | {pct(micro_top[0])} | {pct(micro_top[1])} | "
            f"{pct(micro_top[2])} |", "",
            f"- texts labelled `-` (no theme) given a theme: **{pct(none_given)}** of {len(none_rows)}",
            f"- theme sentiment accuracy over found (text, theme) pairs: **{pct(s_ok / max(s_n, 1))}** "
            f"({s_n} pairs)"]
    by_lang = []
    for lang in langs:
        idx = [j for j, i in enumerate(keep) if rows[i]["language"] == lang]
        _, m = multilabel_scores([g_sets[j] for j in idx], [p_sets[j] for j in idx], cats)
        by_lang.append(f"{lang} {pct(m[2])}")
    out.append("- micro-F1 by language: " + ", ".join(by_lang))
    out += ["", "| theme | support | predicted | P % | R % | F1 % |", "|---|---|---|---|---|---|"]
    for c in cats:
        p, r, f, sup, npred = per[c]
        out.append(f"| {c} | {sup} | {npred} | {pct(p)} | {pct(r)} | {pct(f)} |")
    out.append("")
    given = [None if a is None else {m.theme_id for m in a.themes} for a in analyses]
    return out, list(listed.themes), given


def theme_fields(t) -> tuple:
    return (t.name, t.description, tuple(t.examples), tuple(t.counter_examples), t.parent_id)


def eval_multilingual(cl: Client, installed: list, builtin_given: list) -> list[str]:
    """installed: the built-in taxonomy as listed on a fresh data directory (parents first);
    builtin_given: eval_builtin's theme ids per row of feedback_themes.tsv."""
    rows = read_tsv(FEEDBACK_THEMES)
    builtin_given = [g for r, g in zip(rows, builtin_given) if r["language"] != "en"]
    rows = [r for r in rows if r["language"] != "en"]
    texts = [r["text"] for r in rows]
    gold = [{tok.rsplit(":", 1)[0] for tok in r["labels"].split() if tok != "-"} for r in rows]
    tested = [t for t in installed if sum(1 for g in gold if t.id in g) >= 8]
    parents = {t.parent_id for t in installed if t.parent_id}
    original = {t.id: theme_fields(t) for t in installed}

    def counts(tid: str, support: int, pred: list[bool]) -> tuple[int, int, int]:
        tp = sum(1 for g, p in zip(gold, pred) if p and tid in g)
        fp = sum(1 for g, p in zip(gold, pred) if p and tid not in g)
        return tp, fp, support - tp

    def given_by(analyses, theme_id: str) -> list[bool]:
        return [a is not None and any(m.theme_id == theme_id for m in a.themes) for a in analyses]

    def copy_of(t, keep_id: bool):
        # name + description + the first 3 examples (English in the built-in file), nothing else
        return dict(name=t.name, description=t.description, examples=list(t.examples[:3]),
                    parent_id=t.parent_id if keep_id else "", theme_id=t.id if keep_id else "")

    results = {}  # tid -> {variant: (tp, fp, fn)}
    # (b) first, while the taxonomy is the installed one: replace one theme, measure, restore.
    listed = {t.id: theme_fields(t) for t in cl.list_themes().themes}
    if listed != original:
        raise EvalError("multilingual: the taxonomy is not the built-in one as installed")
    for t in tested:
        support = sum(1 for g in gold if t.id in g)
        builtin_pred = [g is not None and t.id in g for g in builtin_given]
        results[t.id] = {"support": support, "builtin": counts(t.id, support, builtin_pred)}
        copy = cl.upsert(**copy_of(t, keep_id=True))
        analyses, _ = cl.analyze(texts, f"multilingual (b) {t.id}")
        results[t.id]["b"] = counts(t.id, support, given_by(analyses, copy.id))
        cl.upsert(t.name, t.description, list(t.examples), parent_id=t.parent_id, theme_id=t.id,
                  counter_examples=list(t.counter_examples))
        listed = {x.id: theme_fields(x) for x in cl.list_themes().themes}
        if listed != original:
            raise EvalError(f"multilingual: restoring {t.id} did not give the installed taxonomy back")
    # (a): the copy alone.
    for t in tested:
        cl.delete_all_themes()
        copy = cl.upsert(**copy_of(t, keep_id=False))
        analyses, _ = cl.analyze(texts, f"multilingual (a) {t.id}")
        results[t.id]["a"] = counts(t.id, results[t.id]["support"], given_by(analyses, copy.id))

    out = ["### A user-defined theme across languages", "",
           f"Each built-in theme with >= 8 non-English rows ({len(tested)} themes) is re-created by "
           "a user as a copy: its name, description and first 3 examples (English), no "
           f"counter-examples; the {len(rows)} non-English rows of feedback_themes.tsv "
           f"({', '.join(sorted({r['language'] for r in rows}))}) go through Analyze.",
           "- **(a) alone**: a taxonomy holding only the copy.",
           "- **(b) in the built-in taxonomy**: the built-in taxonomy as installed, with that one "
           "theme replaced by the copy (UpsertTheme on the same id and parent; its sub-themes "
           "stay), restored after each theme.",
           "- *built-in*: the installed theme itself (16-18 examples in 6 languages, "
           "counter-examples) on the same rows, from the builtin pass, for comparison.",
           "- exact theme ids: a row given a sub-theme of the copy does not count for the copy "
           "(and in (a) a parent's copy given a row labelled with one of its sub-themes is a "
           "false positive)" + (f"; parents tested: {', '.join(sorted(parents & {t.id for t in tested}))}"
                                if parents & {t.id for t in tested} else "") + ".", "",
           "| theme | gold rows | (a) given | (a) P % | (a) R % | (b) given | (b) P % | (b) R % | "
           "built-in given | built-in P % | built-in R % |",
           "|---|---|---|---|---|---|---|---|---|---|---|"]
    tot = {v: [0, 0, 0] for v in ("a", "b", "builtin")}
    for t in tested:
        res = results[t.id]
        cells = [t.id, str(res["support"])]
        for v in ("a", "b", "builtin"):
            tp, fp, fn = res[v]
            tot[v] = [x + y for x, y in zip(tot[v], (tp, fp, fn))]
            p, r, _ = prf(tp, fp, fn)
            cells += [str(tp + fp), pct(p), pct(r)]
        out.append("| " + " | ".join(cells) + " |")
    cells = ["**micro**", str(tot["a"][0] + tot["a"][2])]
    for v in ("a", "b", "builtin"):
        tp, fp, fn = tot[v]
        p, r, _ = prf(tp, fp, fn)
        cells += [str(tp + fp), f"**{pct(p)}**", f"**{pct(r)}**"]
    out += ["| " + " | ".join(cells) + " |", ""]
    for v, what in (("a", "(a) alone"), ("b", "(b) in the built-in taxonomy"), ("builtin", "built-in theme")):
        p, r, f = prf(*tot[v])
        out.append(f"- {what}: micro P {pct(p)} %, R {pct(r)} %, F1 {pct(f)} %")
    out.append("")
    return out


def load_user_themes() -> tuple[list[dict], list[dict], list[dict], list[str | None]]:
    """-> (themes of user_themes.json, their rows, the non-English rows of feedback_themes.tsv,
    gold theme id per row of own + others: None for the others)."""
    themes = json.loads(USER_THEMES.read_text(encoding="utf-8"))["themes"]
    own = read_tsv(USER_THEME_ROWS)
    others = [r for r in read_tsv(FEEDBACK_THEMES) if r["language"] != "en"]
    return themes, own, others, [r["theme"] for r in own] + [None for _ in others]


def eval_user_themes(cl: Client) -> list[str]:
    """User themes the built-in taxonomy lacks (benches/data/user_themes.json: name, description,
    3 English examples each), on their non-English sentences (user_themes.tsv) among the
    non-English rows of feedback_themes.tsv (none of which is about them). cl: a fresh data
    directory (the built-in taxonomy as installed)."""
    themes, own, others, gold = load_user_themes()
    texts = [r["text"] for r in own + others]
    langs = sorted({r["language"] for r in own})
    installed = {t.id: theme_fields(t) for t in cl.list_themes().themes}

    def counts(tid: str, analyses, theme_id: str) -> dict[str, tuple[int, int, int]]:
        """(tp, fp, fn) over all rows and per language of the theme's own rows."""
        given = [a is not None and any(m.theme_id == theme_id for m in a.themes) for a in analyses]
        out = {}
        for lang in [None, *langs]:
            rows = [i for i in range(len(texts))
                    if lang is None or (i < len(own) and own[i]["language"] == lang)]
            tp = sum(1 for i in rows if given[i] and gold[i] == tid)
            fp = sum(1 for i in rows if given[i] and gold[i] != tid)
            fn = sum(1 for i in rows if not given[i] and gold[i] == tid)
            out[lang or "all"] = (tp, fp, fn)
        return out

    results = {}
    # (b) first, on the installed taxonomy: add the theme, measure, delete it again.
    for t in themes:
        added = cl.upsert(t["name"], t["description"], t["examples"])
        analyses, _ = cl.analyze(texts, f"user themes (b) {t['id']}")
        results[t["id"]] = {"b": counts(t["id"], analyses, added.id)}
        cl.call("DeleteTheme", cl.pb.DeleteThemeRequest(id=added.id), added.id)
        if {x.id: theme_fields(x) for x in cl.list_themes().themes} != installed:
            raise EvalError(f"user themes: deleting {t['id']} did not give the installed taxonomy back")
    # (a): the theme alone.
    for t in themes:
        cl.delete_all_themes()
        added = cl.upsert(t["name"], t["description"], t["examples"])
        analyses, _ = cl.analyze(texts, f"user themes (a) {t['id']}")
        results[t["id"]]["a"] = counts(t["id"], analyses, added.id)

    out = ["### User themes the taxonomy lacks, across languages", "",
           f"{len(themes)} themes written by a user (`benches/data/user_themes.json`: name, "
           "description, 3 English examples, no counter-examples), none of them in the built-in "
           f"taxonomy; their {len(own)} sentences in {', '.join(langs)} "
           "(`benches/data/user_themes.tsv`) and the "
           f"{len(others)} non-English rows of feedback_themes.tsv (about other things) go "
           "through Analyze. Precision counts every row given the theme; recall its own rows.",
           "- **(a) alone**: a taxonomy holding only that theme.",
           "- **(b) added to the built-in taxonomy** as installed (deleted again after).", "",
           "| theme | rows | (a) given | (a) P % | (a) R % | (b) given | (b) P % | (b) R % |",
           "|---|---|---|---|---|---|---|---|"]
    tot = {v: {k: [0, 0, 0] for k in ["all", *langs]} for v in ("a", "b")}
    for t in themes:
        cells = [t["id"], str(sum(1 for g in gold if g == t["id"]))]
        for v in ("a", "b"):
            for k, c in results[t["id"]][v].items():
                tot[v][k] = [x + y for x, y in zip(tot[v][k], c)]
            tp, fp, fn = results[t["id"]][v]["all"]
            p, r, _ = prf(tp, fp, fn)
            cells += [str(tp + fp), pct(p), pct(r)]
        out.append("| " + " | ".join(cells) + " |")
    cells = ["**micro**", str(len(own))]
    for v in ("a", "b"):
        tp, fp, fn = tot[v]["all"]
        p, r, _ = prf(tp, fp, fn)
        cells += [str(tp + fp), f"**{pct(p)}**", f"**{pct(r)}**"]
    out += ["| " + " | ".join(cells) + " |", ""]
    for v, what in (("a", "(a) alone"), ("b", "(b) in the built-in taxonomy")):
        p, r, f = prf(*tot[v]["all"])
        by_lang = ", ".join(f"{k} {pct(prf(*tot[v][k])[1])}" for k in langs)
        out.append(f"- {what}: micro P {pct(p)} %, R {pct(r)} %, F1 {pct(f)} %; recall by "
                   f"language: {by_lang}")
    out.append("")
    return out


def eval_discovery(cl: Client, sets: list[Dataset]) -> list[str]:
    out = ["### Discovery (DiscoverThemes)", "",
           "Held-out texts ingested (product = data set), every theme deleted, DiscoverThemes "
           "(limit 50, min_size 5) over the product. NMI is over the representatives' items only "
           "(the API does not return every item's cluster): cluster = candidate, class = gold.", ""]
    table = ["| data set | items | sentences | uncovered | outliers % | candidates | rep. items | "
             "NMI | NMI, classes shuffled | purity % | time s |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    cl.delete_all_themes()
    label = {}
    for ds in sets:
        ids = [f"{ds.name}-{i}" for i in range(len(ds.test_texts))]
        for i, g in zip(ids, ds.test_gold):
            label[i] = "+".join(sorted(g)) if g else "oos"
        t0 = time.perf_counter()
        cl.ingest(ds.test_texts, ids, ds.name)
        out.append(f"- {ds.name}: {len(ids)} items ingested with wait_for_analysis in "
                   f"{time.perf_counter() - t0:.1f} s")
    cl.delete_all_themes()
    out.append("")
    out += table
    for ds in sets:
        req = cl.pb.DiscoverThemesRequest(query="", filter=cl.pb.Filter(products=[ds.name]),
                                          limit=50, min_size=5)
        t0 = time.perf_counter()
        resp = cl.call("DiscoverThemes", req, ds.name)
        secs = time.perf_counter() - t0
        clusters, classes = [], []
        pure = 0
        for ci, cand in enumerate(resp.candidates):
            labs = [label.get(i) for i in cand.item_ids if i in label]
            clusters += [ci] * len(labs)
            classes += labs
            if labs:
                pure += Counter(labs).most_common(1)[0][1]
        outl = resp.outliers / resp.uncovered if resp.uncovered else float("nan")
        out.append(f"| {ds.name} | {len(ds.test_texts)} | {resp.sentences} | {resp.uncovered} | "
                   f"{pct(outl)} | {len(resp.candidates)} | {len(classes)} | "
                   f"{nmi(clusters, classes):.3f} | {nmi_shuffled(clusters, classes):.3f} | "
                   f"{pct(pure / max(len(classes), 1))} | {secs:.1f} |")
        for cand in resp.candidates[:5]:
            labs = Counter(label.get(i) for i in cand.item_ids if i in label)
            out.append(f"|  ↳ `{cand.name}` | size {cand.size} | share {cand.share:.2f} | | | | "
                       f"{dict(labs.most_common(3))} | | | | |")
    out.append("")
    return out


def eval_cost(cl: Client, ds: Dataset, desc) -> list[str]:
    texts = ds.test_texts[:1000]
    cl.delete_all_themes()
    cl.analyze(texts[:64], "warm-up")
    _, t0 = cl.analyze(texts, "cost: no theme")
    build_taxonomy(cl, ds, 10, desc)
    _, t1 = cl.analyze(texts, f"cost: {len(ds.cats)} themes")
    cl.delete_all_themes()
    _, t2 = cl.analyze(texts, "cost: no theme (again)")
    base = (t0 + t2) / 2
    return ["### Cost of assignment", "",
            f"- {len(texts)} {ds.name} texts through Analyze, sequential requests of {BATCH}: "
            f"no theme {len(texts) / t0:.1f} and {len(texts) / t2:.1f} texts/s; "
            f"{len(ds.cats)} themes (k = 10) {len(texts) / t1:.1f} texts/s: "
            f"**{100 * (t1 - base) / base:+.1f}%** time (noise on a shared machine is a few %)", ""]


# ------------------------------------------------------------------------------ main


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("binary", type=Path)
    ap.add_argument("--quick", action="store_true",
                    help=f"subsample the held-out texts to {QUICK_N} per data set (all clinc oos kept)")
    ap.add_argument("--datasets", default=",".join(ALL_SETS),
                    help="comma-separated subset of " + ",".join(ALL_SETS))
    ap.add_argument("--ks", default=",".join(map(str, KS)), help="seed examples per theme")
    ap.add_argument("--split", choices=("heldout", "tune"), default="heldout",
                    help="tune: score banking77 / clinc150 / mams on their seed splits' rows "
                         "that are not seeds (for design choices; never report these as held out)")
    ap.add_argument("--limit", type=int, default=None,
                    help="subsample the scored texts of each data set to this many")
    ap.add_argument("--dump", type=Path, default=None,
                    help="write each scored text's analysis (themes, spans, sentiments) as JSON "
                         "lines under this directory, one file per data set and k")
    args = ap.parse_args()
    global DUMP
    DUMP = args.dump
    wanted = [s.strip() for s in args.datasets.split(",") if s.strip()]
    bad = [s for s in wanted if s not in ALL_SETS]
    if bad:
        ap.error(f"unknown data set(s) {bad}; choose from {ALL_SETS}")
    ks = tuple(int(x) for x in args.ks.split(","))
    limit = QUICK_N if args.quick else args.limit
    if not args.binary.is_file():
        raise EvalError(f"no binary at {args.binary}")

    desc = load_descriptions()
    sets = {name: load_dataset(name, limit) for name in ("banking77", "clinc150", "mams")
            if name in wanted or (name in ("banking77", "clinc150") and "discovery" in wanted)
            or (name == "clinc150" and "cost" in wanted)}
    if args.split == "tune":
        sets = {name: tuning_split(ds, ks, limit) for name, ds in sets.items()}

    report = ["# Theme assignment and discovery: evaluation", "",
              f"- command: `{shlex.join([sys.executable, *sys.argv])}`",
              f"- binary: `{args.binary}`; {'quick run (subsampled), ' if args.quick else ''}"
              f"data sets: {', '.join(wanted)}; k in {list(ks)}; split: {args.split}",
              f"- host: {platform.node()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
              "- data: benches/data/themes (Banking77 CC-BY-4.0, CLINC150 CC-BY-3.0, MAMS-ACSA "
              "Apache-2.0; sources in its README.md) and benches/data/feedback_themes.tsv", ""]
    t_start = time.time()
    with tempfile.TemporaryDirectory(prefix="verbatim-eval-themes-") as tmp:
        work = Path(tmp)
        stubs = work / "stubs"
        stubs.mkdir()
        generate_stubs(stubs)
        servers = []
        try:
            builtin = None
            if "builtin" in wanted or "multilingual" in wanted:
                # a fresh data directory: the built-in taxonomy exactly as installed
                srv = Server(args.binary, work, "builtin")
                servers.append(srv)
                cl = Client(srv.start())
                lines, installed, given = eval_builtin(cl)
                if "builtin" in wanted:
                    report += lines
                if "multilingual" in wanted:
                    report += eval_multilingual(cl, installed, given)
                srv.stop()
            if "user_themes" in wanted:
                srv = Server(args.binary, work, "user")
                servers.append(srv)
                report += eval_user_themes(Client(srv.start()))
                srv.stop()
            if set(wanted) - {"builtin", "multilingual", "user_themes"}:
                srv = Server(args.binary, work, "datasets")
                servers.append(srv)
                cl = Client(srv.start())
                for name in ("banking77", "clinc150", "mams"):
                    if name in wanted:
                        report += eval_assignment(cl, sets[name], ks, desc)
                if "cost" in wanted:
                    report += eval_cost(cl, sets["clinc150"], desc)
                if "discovery" in wanted:
                    report += eval_discovery(cl, [sets["banking77"], sets["clinc150"]])
        except EvalError:
            for s in servers:
                if s.proc is not None:
                    log(s.tail())
            raise
        finally:
            for s in servers:
                s.stop()
    report.append(f"_Total run time {time.time() - t_start:.0f} s._")
    print("\n".join(report))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except EvalError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
