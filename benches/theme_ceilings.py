#!/usr/bin/env python3
"""Ceilings of two issue-6 targets with this encoder: what any threshold or linear head on
e5-small embeddings could reach, measured through the real binary.

usage: PY benches/theme_ceilings.py BINARY [user_themes]

PY needs grpcio + grpcio-tools (the venv of tests/blackbox/run.sh) and numpy (pinned in
models/requirements.txt: `.venv/bin/pip install numpy==2.3.5`). Deterministic; ~3.5 min on 2 cores.

1. A user theme from a name, description and 3 English examples, on the non-English rows of
   benches/data/feedback_themes.tsv (the protocol of `eval_themes.py --datasets multilingual`,
   case (a), exact theme ids). For each built-in theme with >= 8 non-English rows, its copy's
   similarity to every row: the gate (cosine to the normalised sum of the label and the 3
   examples, as src/themes/model.rs builds it) and the nearest row (max cosine to the label or
   an example). ORACLE: per theme, the threshold chosen on the very rows scored (the best F1,
   and the highest recall with precision >= 0.9). No deployable gate on that similarity can
   beat these figures, since each uses the answers. The same with the built-in theme's full
   examples (16-18, six languages) shows what more examples buy.
   The same oracle for the 5 user themes the built-in taxonomy lacks (benches/data/user_themes.*,
   the protocol of `eval_themes.py --datasets user_themes`); `user_themes` runs only this part.
2. MAMS-ACSA aspect sentiment (`eval_themes.py --datasets mams`, k = 10): the (sentence,
   aspect) pairs the service finds, the text of the span that carries each found aspect
   embedded on its own (Analyze, include_embeddings), and a multinomial logistic head
   (models/train_sentiment_head.py's fit_logistic) trained IN-DOMAIN on the MAMS train pairs
   (the train rows that are not seeds), its L2 strength and features (the span alone, or with
   span * aspect-label embedding) chosen by 5-fold cross-validation on train only, then scored
   once on the val pairs. Beside it the service's answer (ThemeMention.sentiment: the sentence
   head on the carrying unit before 52e4b27, the aspect head since) on the same val pairs, and the MAMS head's transfer to another domain: the built-in
   taxonomy's labelled (row, theme) pairs of feedback_themes.tsv (whole-row embeddings, six
   languages) against the service's sentence head on the same rows.

Prints Markdown to stdout, progress on stderr; exit 0 whatever the figures, 1 on an error.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "models"))
import eval_themes as E  # noqa: E402
from train_sentiment_head import fit_logistic  # noqa: E402
from verbatim_harness import analyze_batched, generate_stubs, log  # noqa: E402

POLARITY = {"negative": 0, "neutral": 1, "positive": 2}
L2S = (0.03, 0.1, 0.3, 1.0, 3.0)
FOLDS = 5


def embed(cl: E.Client, texts: list[str], what: str) -> np.ndarray:
    results, _ = analyze_batched(cl.stub, cl.pb, texts, what, include_embeddings=True,
                                 retry_on=cl.RETRY_ON, what="Analyze ({name})")
    if any(r.WhichOneof("outcome") != "analysis" for r in results):
        raise E.EvalError(f"{what}: a text was rejected")
    return np.array([list(r.analysis.embedding) for r in results], dtype=np.float64)


def label_text(name: str, description: str) -> str:
    """The text the service embeds for a theme's label (src/themes/model.rs, label_text)."""
    return f"{name}: {description}" if description else name


def normalise(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def oracle(scores: np.ndarray, gold: np.ndarray) -> tuple[tuple[int, int, int], float]:
    """-> (tp, fp, fn) at the F1-best threshold, recall at the lowest threshold with P >= 0.9."""
    order = np.argsort(-scores, kind="stable")
    tp = np.cumsum(gold[order])
    k = np.arange(1, len(scores) + 1)
    fp, fn = k - tp, gold.sum() - tp
    best = int(np.argmax(2 * tp / (2 * tp + fp + fn)))
    precise = np.where(tp / k >= 0.9)[0]
    recall90 = float(tp[precise.max()] / gold.sum()) if len(precise) else 0.0
    return (int(tp[best]), int(fp[best]), int(fn[best])), recall90


def user_theme_ceiling(cl: E.Client) -> list[str]:
    rows = [r for r in E.read_tsv(E.FEEDBACK_THEMES) if r["language"] != "en"]
    gold = [{tok.rsplit(":", 1)[0] for tok in r["labels"].split() if tok != "-"} for r in rows]
    installed = list(cl.list_themes().themes)
    tested = [t for t in installed if sum(1 for g in gold if t.id in g) >= 8]
    X = normalise(embed(cl, [r["text"] for r in rows], "non-English rows"))
    out = ["### Ceiling: a user theme from 3 English examples (oracle thresholds)", "",
           f"{len(tested)} themes, {len(rows)} non-English rows; the threshold of each theme "
           "chosen on the rows scored (an upper bound for any gate on that similarity).", "",
           "| theme rows | similarity | oracle P % | oracle R % | oracle F1 % | "
           "mean recall at P >= 90% |", "|---|---|---|---|---|---|"]
    for variant in ("3 English examples", "all built-in examples"):
        for feature in ("gate", "nearest row"):
            total = np.zeros(3, dtype=int)
            recalls = []
            for t in tested:
                examples = list(t.examples[:3]) if variant.startswith("3") else list(t.examples)
                R = normalise(embed(cl, [label_text(t.name, t.description)] + examples,
                                    f"{t.id} rows"))
                s = X @ normalise(R.sum(0)) if feature == "gate" else (X @ R.T).max(1)
                y = np.array([t.id in g for g in gold])
                counts, r90 = oracle(s, y)
                total += counts
                recalls.append(r90)
            tp, fp, fn = total
            p, r, f = E.prf(tp, fp, fn)
            out.append(f"| {variant} | {feature} | {E.pct(p)} | {E.pct(r)} | {E.pct(f)} | "
                       f"{E.pct(float(np.mean(recalls)))} |")
    return out + [""]


def distinct_user_theme_ceiling(cl: E.Client) -> list[str]:
    """The same oracle for the 5 user themes the built-in taxonomy lacks (the protocol of
    `eval_themes.py --datasets user_themes`): their 200 non-English sentences among the 312
    non-English rows of feedback_themes.tsv."""
    themes, own, others, gold = E.load_user_themes()
    X = normalise(embed(cl, [r["text"] for r in own + others], "user-theme rows"))
    out = ["### Ceiling: user themes the taxonomy lacks (oracle thresholds)", "",
           f"{len(themes)} themes (label + 3 English examples), {len(own)} own non-English rows "
           f"among {len(own) + len(others)}; the threshold of each theme chosen on the rows scored.",
           "", "| similarity | oracle P % | oracle R % | oracle F1 % | mean recall at P >= 90% | "
           "recall at P >= 90% per theme |", "|---|---|---|---|---|---|"]
    for feature in ("gate", "nearest row"):
        total = np.zeros(3, dtype=int)
        recalls = []
        for t in themes:
            R = normalise(embed(cl, [label_text(t["name"], t["description"])] + t["examples"],
                                f"{t['id']} rows"))
            s = X @ normalise(R.sum(0)) if feature == "gate" else (X @ R.T).max(1)
            counts, r90 = oracle(s, np.array([g == t["id"] for g in gold]))
            total += counts
            recalls.append(r90)
        p, r, f = E.prf(*total)
        per = ", ".join(f"{t['id']} {E.pct(x)}" for t, x in zip(themes, recalls))
        out.append(f"| {feature} | {E.pct(p)} | {E.pct(r)} | {E.pct(f)} | "
                   f"{E.pct(float(np.mean(recalls)))} | {per} |")
    return out + [""]


def builtin_pairs(cl: E.Client):
    """Every labelled (row, built-in theme) pair of feedback_themes.tsv, all six languages: the
    row's embedding, its theme's label embedding, the gold polarity (read while the built-in
    taxonomy is installed)."""
    rows = E.read_tsv(E.FEEDBACK_THEMES)
    themes = {t.id: t for t in cl.list_themes().themes}
    X = normalise(embed(cl, [r["text"] for r in rows], "all rows"))
    labels = {tid: normalise(embed(cl, [label_text(t.name, t.description)], tid))[0]
              for tid, t in themes.items()}
    S, A, y = [], [], []
    for x, r in zip(X, rows):
        for tok in r["labels"].split():
            if tok != "-" and tok.rsplit(":", 1)[0] in labels:
                tid, pol = tok.rsplit(":", 1)
                S.append(x)
                A.append(labels[tid])
                y.append(POLARITY[pol])
    return np.array(S), np.array(A), np.array(y)


def found_pairs(cl: E.Client, ds: E.Dataset, id_to_cat: dict, what: str):
    analyses, _ = cl.analyze(ds.test_texts, what)
    pairs = []
    for text, g, a in zip(ds.test_texts, ds.test_gold, analyses):
        if a is None:
            continue
        for m in a.themes:
            cat = id_to_cat.get(m.theme_id)
            if cat in g and m.spans:
                sent = m.sentiment
                pairs.append((text[m.spans[0].start:m.spans[0].end], cat, POLARITY[g[cat]],
                              int(np.argmax([sent.negative, sent.neutral, sent.positive]))))
    return pairs


def per_class_of(pred: np.ndarray, gold: np.ndarray) -> str:
    return ", ".join(f"{k} {E.pct(float(np.mean(pred[gold == v] == v)))}"
                     for k, v in POLARITY.items() if (gold == v).any())


def fit_predict(X: np.ndarray, y: np.ndarray, l2: float, Xt: np.ndarray) -> np.ndarray:
    W, b = fit_logistic(X, y, np.ones(len(y)), l2)
    return np.argmax(Xt @ W.T + b, axis=1)


def aspect_sentiment_ceiling(cl: E.Client, other) -> list[str]:
    desc = E.load_descriptions()
    val = E.load_dataset("mams", None)
    train = E.tuning_split(val, (10,), None)
    id_to_cat = E.build_taxonomy(cl, val, 10, desc)
    tr = found_pairs(cl, train, id_to_cat, "mams train")
    va = found_pairs(cl, val, id_to_cat, "mams val")
    labels = {c: normalise(embed(cl, [label_text(*desc[("mams", c)])], c))[0] for c in val.cats}

    def features(pairs, which: str) -> np.ndarray:
        S = embed(cl, [p[0] for p in pairs], f"{len(pairs)} spans")
        if which == "span":
            return S
        A = np.array([labels[p[1]] for p in pairs])
        return np.hstack([S, S * A])

    ytr = np.array([p[2] for p in tr])
    yva = np.array([p[2] for p in va])
    folds = np.arange(len(tr)) % FOLDS
    best = None
    cv_lines = []
    for which in ("span", "span + span x aspect label"):
        Xtr, Xva = features(tr, which), features(va, which)
        for l2 in L2S:
            acc = np.mean([np.mean(fit_predict(Xtr[folds != f], ytr[folds != f], l2,
                                               Xtr[folds == f]) == ytr[folds == f])
                           for f in range(FOLDS)])
            cv_lines.append(f"| {which} | {l2:g} | {E.pct(acc)} |")
            if best is None or acc > best[0]:
                best = (acc, which, l2, Xtr, Xva)
    acc_cv, which, l2, Xtr, Xva = best
    pred = fit_predict(Xtr, ytr, l2, Xva)
    # Transfer: the same head on the built-in taxonomy's labelled pairs (another domain, six
    # languages; whole-row embeddings), beside the service's sentence head on the same rows.
    So, Ao, yo = other
    Xo = So if which == "span" else np.hstack([So, So * Ao])
    W, b = fit_logistic(Xtr, ytr, np.ones(len(ytr)), l2)
    transfer = np.argmax(Xo @ W.T + b, axis=1)
    head = json.loads((E.REPO / "models" / "heads" / "e5-small-verbatim.json").read_text())
    rows = {c: i for i, c in enumerate(head["classes"])}
    order = [rows[-1], rows[0], rows[1]]
    sentence = np.argmax(So @ np.array(head["coef"])[order].T + np.array(head["intercept"])[order],
                         axis=1)
    service = np.array([p[3] for p in va])
    per_class = lambda pr: per_class_of(pr, yva)  # noqa: E731
    return ["### Ceiling: MAMS-ACSA aspect sentiment with a linear head (trained in-domain)", "",
            f"- found pairs: {len(tr)} train (non-seed train rows), {len(va)} val; val gold: "
            + ", ".join(f"{k} {E.pct(float(np.mean(yva == v)))}" for k, v in POLARITY.items()),
            "", "| features | L2 | 5-fold CV accuracy on train % |", "|---|---|---|", *cv_lines,
            "", f"- chosen by CV: {which}, L2 {l2:g}",
            f"- val accuracy, head trained on all train pairs: **{E.pct(float(np.mean(pred == yva)))}**"
            f" (per gold class: {per_class(pred)})",
            f"- val accuracy, the service's answer on the same pairs: "
            f"{E.pct(float(np.mean(service == yva)))} (per gold class: {per_class(service)})",
            f"- transfer to the built-in taxonomy's {len(yo)} labelled (row, theme) pairs "
            "(benches/data/feedback_themes.tsv, six languages, whole-row embeddings): the MAMS "
            f"head {E.pct(float(np.mean(transfer == yo)))} (per gold class: "
            f"{per_class_of(transfer, yo)}); the service's sentence head on the same rows "
            f"{E.pct(float(np.mean(sentence == yo)))} ({per_class_of(sentence, yo)})", ""]


def main() -> int:
    only_user = sys.argv[2:] == ["user_themes"]
    if len(sys.argv) not in (2, 3) or not Path(sys.argv[1]).is_file() or \
            (len(sys.argv) == 3 and not only_user):
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    binary = Path(sys.argv[1])
    report = ["# Ceilings of the theme targets with this encoder", "",
              f"- command: `{' '.join([sys.executable, *sys.argv])}`", ""]
    with tempfile.TemporaryDirectory(prefix="verbatim-ceilings-") as tmp:
        work = Path(tmp)
        (work / "stubs").mkdir()
        generate_stubs(work / "stubs")
        srv = E.Server(binary, work, "ceilings")
        try:
            cl = E.Client(srv.start())
            if not only_user:
                report += user_theme_ceiling(cl)
            report += distinct_user_theme_ceiling(cl)
            if not only_user:
                report += aspect_sentiment_ceiling(cl, builtin_pairs(cl))
        except E.EvalError:
            log(srv.tail())
            raise
        finally:
            srv.stop()
    print("\n".join(report))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except E.EvalError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
