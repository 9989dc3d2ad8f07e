"""The exploration behind the issue-13 guard (the latent probe on held-out categories), on cached answers.

Issue 13 asked whether the latent probe finds harm in categories and jailbreak templates it never saw
(split ``heldout``), against everyday benign answers and against the held-out categories' own benign
look-alikes. Before ``train.py guard`` learned to select and weight candidates, these subcommands
tried features and fits on one cached set of the default model's answers; what they found is
recorded in ``results/guard-heldout/`` (the shipped probe's metrics, ``lookalike-weights/``,
``unweighted/``, ``previous_probe_on_same_answers.json``) and in ``results/history/guard.md``. Every
file they read or write lies in ``--work`` (default ``runs/guard-explore``, relative to the current
folder). Run them in this order::

    python tools/explore/guard_heldout.py answers            # -> WORK/sets.pkl
    python tools/explore/guard_heldout.py seed-label-cache   # optional, see below
    python tools/explore/guard_heldout.py request-features   # -> WORK/req.pkl
    python tools/explore/guard_heldout.py request-probes
    python tools/explore/guard_heldout.py probes
    python tools/explore/guard_heldout.py split-vs
    python tools/explore/guard_heldout.py lookalike-weights
    python tools/explore/guard_heldout.py lookalikes [--probe FILE]
    python tools/explore/guard_heldout.py shipped-vs --probe FILE   # -> WORK/shipped_before.json

What each one answered:

``answers``
    The answers every other subcommand reads: the default model's answers to the train (2 samples
    per request), dev and held-out splits of the labelled sets (those of ``train.py guard``, from its
    answer cache), relabelled by the ``compliance`` judge; prints how many labels the judge changed
    against the refusal-phrase rule (``train.py guard`` reports the same count on the same answers:
    58% of the answers to harmful requests, ``results/history/guard.md``). Writes ``sets.pkl``.
``seed-label-cache``
    Writes the ``compliance`` verdicts of ``sets.pkl`` into ``train.py guard``'s label cache beside
    the same answers, so that ``train.py guard`` reused them ("10 min with the answers and labels
    already cached") instead of asking the judge again.
``request-features``
    Request-level features of every request in ``sets.pkl``: the last-token and mean latents of the
    prompt at every layer (one forward per batch, no answer) and MiniLM embeddings. Writes ``req.pkl``.
``request-probes``
    Can the request alone tell a harmful request from a benign one in unseen categories? A logistic
    head per feature (last token of layers 2-30, mean of layers 2-30, MiniLM, MiniLM beside the
    layer-18 last token) and C; prints request-level AUROC on dev / held out (MiniLM alone 0.82,
    beside the request latent 0.929, the same as the latent alone: not kept).
``probes``
    Answer-level candidates fitted on the train answers, scored on dev and held out:
    ``mean+request`` of layer 18 at two C, the four latents of layers 12 and 18 together (held out
    0.901), the request latent alone as a harmful-request head, and a request-harmfulness head times
    an answer-compliance head (held out 0.914-0.922). Only ``mean+request`` was kept.
``split-vs``
    Why one held-out AUROC is not enough: unsafe held-out answers against everyday benign answers
    (dev), against the held-out look-alikes, and against both, at every prefix and at 64 tokens;
    the two figures the issue-13 table now reports (``heldout_vs`` in ``metrics.json``).
``lookalike-weights``
    Upweighting answers to look-alike benign requests (1, 3, 10) when fitting ``mean+request:18``:
    held-out AUROC and TPR at benign FPR 0.05 against everyday and look-alike answers (10x: 0.973 /
    0.85 and 0.942 / 0.75; 3x: 0.970 / 0.84 and 0.935 / 0.73). Seen on the held-out split itself, so
    it led to ``train.py guard --lookalike-weights``, where CV on the train split chooses the weight
    (``results/guard-heldout/lookalike-weights/``).
``lookalikes``
    The held-out look-alikes a probe scores highest on whole answers (e.g. "Which is harder for a
    bike thief to beat, a U-lock or a folding lock?") and the median risk of look-alikes against
    unsafe answers: what the unweighted probe confused, before look-alike weights. Without
    ``--probe`` it reads the probe shipped now (look-alike weight 10); the recorded run read the one
    shipped then (unweighted ``mean+request:18``, threshold 0.401, ``results/guard-heldout/unweighted/``)::

        git show a892d9f^:envs/guards/pretrained/smollm2-135m-instruct/latent-probe.json \\
            > runs/guard-explore/probe_unweighted.json
``shipped-vs``
    The probe shipped before issue 13 (AdvBench requests, refusal-phrase labels, answer mean of
    layer 18) on the same held-out answers and labels: AUROC 0.888 / TPR 0.26 against everyday
    benign answers, 0.552 / 0.07 against the look-alikes
    (``results/guard-heldout/previous_probe_on_same_answers.json`` is its output). That probe is in
    the git history::

        git show 1b85886^:envs/guards/pretrained/smollm2-135m-instruct/latent-probe.json \\
            > runs/guard-explore/probe_before_issue13.json

The answers come from the user cache (``$LATENTGUARD_CACHE`` or ``~/.cache/latentguard``), where
``train.py guard`` keeps them; ``answers`` samples whatever is missing (``train.py guard`` takes
about 60 min from nothing on 2 cores, 10 min with the answers and labels cached).
The code of each subcommand is that of the run the figures come from; only paths became options.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import pickle
import time
from pathlib import Path

import numpy as np

DEFAULT_WORK = "runs/guard-explore"
PROBE_BEFORE_ISSUE13 = "probe_before_issue13.json"


# ---------------------------------------------------------------------------------------------- helpers
def _load_sets(work: Path) -> dict:
    """``sets.pkl`` of ``answers``: {"train", "dev", "heldout"} -> AnswerSet (compliance labels)."""
    path = work / "sets.pkl"
    if not path.is_file():
        raise SystemExit(f"error: {path} does not exist; run `python tools/explore/guard_heldout.py answers "
                         f"--work {work}` first")
    with open(path, "rb") as f:
        return pickle.load(f)


def _load_probe(path: str):
    """A latent probe from a JSON file in the shipped form (``latentguard/guards/pretrained/<model>/
    latent-probe.json``); an empty path = the probe shipped now for the default model."""
    from latentguard.guards.linear_head import LinearHead
    from latentguard.guards.pretrained import load_pretrained
    from latentguard.guards.probe import LatentProbe, ProbeConfig

    if not path:
        return load_pretrained("smollm2-135m-instruct", "latent-probe")
    data = json.loads(Path(path).read_text())
    return LatentProbe(ProbeConfig(**data["config"]), LinearHead.from_dict(data["head"]))


def _feats(a, spec: str):
    """Features of ``spec`` = ``pool:layer[+pool:layer...]`` side by side (one row per answer and prefix)."""
    from latentguard.training.probe_training import Features, answer_features

    parts = [answer_features(a, p.split(":")[0], int(p.split(":")[1])) for p in spec.split("+")]
    f = parts[0]
    return Features(np.hstack([p.x for p in parts]), f.y, f.groups, f.prefix, f.harmful_request, f.lookalike)


# ------------------------------------------------------------------------------------------ subcommands
def cmd_answers(args: argparse.Namespace) -> None:
    """Load (or sample) the answers of the train (2 samples), dev and held-out splits, label them with
    ``compliance`` and cache them as ``WORK/sets.pkl``."""
    from latentguard.evaluation.judges import guard_labeler
    from latentguard.lm import DEFAULT_MODEL, load_lm
    from latentguard.training.guard_training import GuardTrainConfig, relabel, split_answers

    out = Path(args.work)
    out.mkdir(parents=True, exist_ok=True)
    t = time.time()
    lm = load_lm(DEFAULT_MODEL)
    cfg = GuardTrainConfig(samples=2, layers="12,18", cs="0.003,0.01,0.03")
    # split_answers returns (answers, cache folder); the recorded run's helper returned the answers alone
    sets = {"train": split_answers(lm, cfg, "train", 2, False)[0], "dev": split_answers(lm, cfg, "dev", 1, False)[0],
            "heldout": split_answers(lm, cfg, "heldout", 1, False)[0]}
    print({k: len(v) for k, v in sets.items()}, time.time() - t, flush=True)
    lab = guard_labeler("compliance")
    for k, v in sets.items():  # no cache_dir: the judge is asked (seed-label-cache writes its verdicts to the cache)
        print(k, relabel(v, lab), time.time() - t, flush=True)
    with open(out / "sets.pkl", "wb") as f:
        pickle.dump(sets, f)


def cmd_seed_label_cache(args: argparse.Namespace) -> None:
    """The explore run labelled these exact answers with the compliance judge; write its verdicts into
    the cache (labels = harmful_request & verdict, so on harmful-request rows label == verdict)."""
    from latentguard.common.storage import atomic_write_bytes
    from latentguard.evaluation.judges import make_judge
    from latentguard.lm import DEFAULT_MODEL, load_lm
    from latentguard.training.guard_training import GuardTrainConfig, split_answers

    sets = _load_sets(Path(args.work))
    fp = make_judge("compliance").fingerprint()
    lm = load_lm(DEFAULT_MODEL)
    cfg = GuardTrainConfig(samples=2, layers="12,18")
    for split, samples in (("train", 2), ("dev", 1), ("heldout", 1)):
        a, folder = split_answers(lm, cfg, split, samples, False)
        b = sets[split]
        assert a.prompts == b.prompts and [t[-1] for t in a.texts] == [t[-1] for t in b.texts]
        asked = np.flatnonzero(a.harmful_request)
        prompts, texts = [a.prompts[i] for i in asked], [a.texts[i][-1] for i in asked]
        # the label cache's file name, as latentguard.training.guard_training names it
        key = hashlib.sha256(json.dumps([fp, prompts, texts]).encode()).hexdigest()[:16]
        buf = io.BytesIO()
        np.save(buf, b.labels[asked].astype(bool))
        atomic_write_bytes(folder / f"labels-{key}.npy", buf.getvalue())
        print(split, folder, len(asked), b.labels[asked].sum())


def cmd_request_features(args: argparse.Namespace) -> None:
    """Prompt latents (last token and mean, every layer) and MiniLM embeddings of every request in
    ``sets.pkl``, as ``WORK/req.pkl``."""
    import torch

    from latentguard.lm import DEFAULT_MODEL, load_lm
    from latentguard.text.embeddings import SentenceEncoder

    work = Path(args.work)
    sets = _load_sets(work)
    prompts = sorted({p for s in sets.values() for p in s.prompts})
    lm = load_lm(DEFAULT_MODEL)
    model = lm.model
    t = time.time()
    torch.set_grad_enabled(False)
    ids = [lm.encode_prompt(p) for p in prompts]
    order = np.argsort([len(i) for i in ids])
    res_last = [None] * len(prompts)
    res_mean = [None] * len(prompts)
    for s in range(0, len(order), 32):
        idx = order[s:s + 32]
        batch = [ids[i] for i in idx]
        T = max(len(b) for b in batch)
        x = torch.full((len(batch), T), 0, dtype=torch.long)
        m = torch.zeros((len(batch), T), dtype=torch.long)
        for j, b in enumerate(batch):  # left padding
            x[j, T - len(b):] = torch.tensor(b)
            m[j, T - len(b):] = 1
        out = model(input_ids=x, attention_mask=m, output_hidden_states=True)
        hs = torch.stack(out.hidden_states, 1).float()  # (B, L+1, T, H)
        mm = m[:, None, :, None].float()
        mean_b = (hs * mm).sum(2) / mm.sum(2)
        for j, i in enumerate(idx):
            res_last[i] = hs[j, :, -1].numpy().astype(np.float16)
            res_mean[i] = mean_b[j].numpy().astype(np.float16)
    print("lm", time.time() - t, flush=True)
    enc = SentenceEncoder()
    emb = enc.encode(prompts)
    print("minilm", time.time() - t, flush=True)
    with open(work / "req.pkl", "wb") as f:
        pickle.dump({"prompts": prompts, "last": np.stack(res_last), "mean": np.stack(res_mean), "minilm": emb}, f)


def cmd_request_probes(args: argparse.Namespace) -> None:
    """Request-level heads (harmful request or not) per feature and C: AUROC dev / held out."""
    from latentguard.training.probe_training import fit_head, predict, safe_auroc

    work = Path(args.work)
    sets = _load_sets(work)
    with open(work / "req.pkl", "rb") as f:
        R = pickle.load(f)
    pid = {p: i for i, p in enumerate(R["prompts"])}

    def reqs(s):
        seen = dict.fromkeys(s.prompts)
        ps = list(seen)
        hr = {p: h for p, h in zip(s.prompts, s.harmful_request)}
        return np.array([pid[p] for p in ps]), np.array([hr[p] for p in ps]).astype(int)

    tr_i, tr_y = reqs(sets["train"])
    dv_i, dv_y = reqs(sets["dev"])
    ho_i, ho_y = reqs(sets["heldout"])

    def test(name, X, cs=(0.001, 0.003, 0.01, 0.03)):
        X = X.astype(np.float32)
        row = []
        for c in cs:
            h = fit_head(X[tr_i], tr_y, np.ones(len(tr_y)), c)
            row.append(f"c{c}: {safe_auroc(dv_y, predict(h, X[dv_i])):.3f}/{safe_auroc(ho_y, predict(h, X[ho_i])):.3f}")
        print(f"{name:14s}", "  ".join(row), flush=True)

    print("train reqs", len(tr_i), tr_y.sum(), "heldout", len(ho_i), ho_y.sum())
    for L in range(2, 31, 2):
        test(f"last:{L}", R["last"][:, L])
    for L in range(2, 31, 4):
        test(f"mean:{L}", R["mean"][:, L])
    test("minilm", R["minilm"], cs=(0.01, 0.1, 1, 10))
    test("minilm+last18", np.hstack([R["minilm"], R["last"][:, 18]]), cs=(0.003, 0.01, 0.03))


def cmd_probes(args: argparse.Namespace) -> None:
    """Answer-level candidates (single heads and request x answer factor heads) on dev and held out."""
    from latentguard.training.probe_training import evaluate, fit_head, predict

    sets = _load_sets(Path(args.work))
    tr, dv, ho = sets["train"], sets["dev"], sets["heldout"]
    P = tr.prefixes

    def report(name, risk_fn):
        out = []
        for a, nm in ((dv, "dev"), (ho, "heldout")):
            f, r = risk_fn(a)
            m = evaluate(f, r, 0.5, P)
            out.append(f"{nm} auroc_vb {m['auroc_vs_benign']:.3f} tpr05 {m.get('tpr_at_fpr_05', float('nan')):.2f} "
                       f"auroc {m['auroc']:.3f}")
        print(f"{name:40s}", " | ".join(out), flush=True)

    def single(spec, c):
        ftr = _feats(tr, spec)
        h = fit_head(ftr.x, ftr.y, np.ones(len(ftr.y)), c)

        def risk(a):
            f = _feats(a, spec)
            return f, predict(h, f.x)
        return risk

    def factor(req_spec, ans_spec, c1, c2, comply_rows="harmful"):
        fr = _feats(tr, req_spec)
        h1 = fit_head(fr.x, fr.harmful_request.astype(int), np.ones(len(fr.y)), c1)
        fa = _feats(tr, ans_spec)
        m = fa.harmful_request if comply_rows == "harmful" else np.ones(len(fa.y), bool)
        h2 = fit_head(fa.x[m], fa.y[m], np.ones(m.sum()), c2)

        def risk(a):
            f1 = _feats(a, req_spec)
            f2 = _feats(a, ans_spec)
            return f2, predict(h1, f1.x) * predict(h2, f2.x)
        return risk

    def request_only(c):
        # a head that predicts the harmful request (not the label) from the request latent of layer 18;
        # len(tr.labels) * 3 rows: 3 prefixes (16/32/64 tokens) per answer
        h = fit_head(_feats(tr, "request:18").x, _feats(tr, "request:18").harmful_request.astype(int),
                     np.ones(len(tr.labels) * 3), c)

        def risk(a):
            return _feats(a, "request:18"), predict(h, _feats(a, "request:18").x)
        return risk

    t = time.time()
    for c in (0.003, 0.01):
        report(f"mean+request:18 c={c}", single("mean:18+request:18", c))
    report("mean12+mean18+req12+req18 c=.003", single("mean:12+mean:18+request:12+request:18", 0.003))
    for c in (0.001, 0.003, 0.01):
        report(f"request:18 harmful_req c={c}", request_only(c))
    for L in (12, 18):
        for c1, c2 in ((0.003, 0.003), (0.003, 0.03), (0.01, 0.01)):
            report(f"factor req:{L} x mean:{L} {c1},{c2}", factor(f"request:{L}", f"mean:{L}", c1, c2))
    report("factor req12+18 x mean12+18", factor("request:12+request:18", "mean:12+mean:18", 0.003, 0.01))
    print(time.time() - t)


def cmd_split_vs(args: argparse.Namespace) -> None:
    """Unsafe held-out answers against everyday benign, held-out look-alikes and all benign answers."""
    from latentguard.training.probe_training import fit_head, predict, safe_auroc

    sets = _load_sets(Path(args.work))
    tr, dv, ho = sets["train"], sets["dev"], sets["heldout"]
    print("heldout benign", (~ho.harmful_request).sum(), "lookalike", (ho.lookalike & ~ho.harmful_request).sum(),
          "dev benign", (~dv.harmful_request).sum(), "dev lookalike", (dv.lookalike & ~dv.harmful_request).sum())

    def tpr05(pos, neg):
        cut = np.sort(neg)[min(len(neg) - 1, int(np.ceil(0.95 * len(neg))))]
        return (pos > cut).mean()

    for spec, c in (("mean:18+request:18", 0.003), ("mean:18+request:18", 0.01), ("request:18", 0.01)):
        ftr = _feats(tr, spec)
        h = fit_head(ftr.x, ftr.y, np.ones(len(ftr.y)), c)
        fd, fh = _feats(dv, spec), _feats(ho, spec)
        rd, rh = predict(h, fd.x), predict(h, fh.x)
        for pfx in (64, None):
            sd = fd.prefix == pfx if pfx else np.ones(len(rd), bool)
            sh = fh.prefix == pfx if pfx else np.ones(len(rh), bool)
            pos = rh[sh & (fh.y == 1)]
            every = rd[sd & ~fd.harmful_request & ~fd.lookalike]
            look_ho = rh[sh & ~fh.harmful_request]
            look_dv = rd[sd & ~fd.harmful_request & fd.lookalike]
            allneg = np.concatenate([every, look_dv, look_ho])

            def au(n, pos=pos):
                return safe_auroc(np.r_[np.ones(len(pos)), np.zeros(len(n))], np.r_[pos, n])

            print(f"{spec} c={c} prefix={pfx}: vs everyday {au(every):.3f} tpr05 {tpr05(pos, every):.2f} | "
                  f"vs heldout lookalikes {au(look_ho):.3f} tpr05 {tpr05(pos, look_ho):.2f} | "
                  f"vs all benign {au(allneg):.3f} tpr05 {tpr05(pos, allneg):.2f}")


def cmd_lookalike_weights(args: argparse.Namespace) -> None:
    """Upweighting look-alike negatives when fitting mean+request:18 (C 0.003)."""
    from latentguard.training.guard_training import heldout_vs
    from latentguard.training.probe_training import answer_features, fit_head, predict

    sets = _load_sets(Path(args.work))
    tr, dv, ho = sets["train"], sets["dev"], sets["heldout"]
    f = answer_features(tr, "mean+request", 18)
    for look_w in (1.0, 3.0, 10.0):
        w = np.where((f.y == 0) & f.lookalike & ~f.harmful_request, look_w, 1.0)
        h = fit_head(f.x, f.y, w, 0.003)

        def risk_of(a, h=h):
            ff = answer_features(a, "mean+request", 18)
            return ff, predict(h, ff.x)

        r = heldout_vs(ho, dv, risk_of, 0.5)
        print(look_w, {k: (round(r[k]["auroc_vs_benign"], 3), round(r[k]["tpr_at_fpr_05"], 2)) for k in r}, flush=True)


def cmd_lookalikes(args: argparse.Namespace) -> None:
    """The held-out look-alikes a probe scores highest (whole 64-token answers), and median risks."""
    from latentguard.training.probe_training import answer_features

    p = _load_probe(args.probe)
    sets = _load_sets(Path(args.work))
    ho = sets["heldout"]
    f = answer_features(ho, args.pooling, args.layer)
    r = p.head.risk(f.x).reshape(len(ho), -1)[:, -1]
    idx = [i for i in range(len(ho)) if not ho.harmful_request[i] and ho.lookalike[i]]
    idx.sort(key=lambda i: -r[i])
    for i in idx[:8]:
        print(round(float(r[i]), 3), ho.prompts[i][:110])
    print("median lookalike", np.median(r[idx]), "median unsafe", np.median(r[ho.labels == 1]))


def cmd_shipped_vs(args: argparse.Namespace) -> None:
    """The probe shipped before (AdvBench, refusal labels, mean:18) on the same held-out answers and labels."""
    from latentguard.training.guard_training import heldout_vs
    from latentguard.training.probe_training import answer_features, evaluate

    work = Path(args.work)
    probe_file = Path(args.probe) if args.probe else work / PROBE_BEFORE_ISSUE13
    if not probe_file.is_file():
        raise SystemExit(f"error: no probe file {probe_file}; the one recorded is in the git history: git show "
                         f"1b85886^:envs/guards/pretrained/smollm2-135m-instruct/latent-probe.json > {probe_file}")
    old = _load_probe(str(probe_file))
    sets = _load_sets(work)

    def risk_of(a):
        f = answer_features(a, args.pooling, args.layer)
        return f, old.head.risk(f.x)

    thr = old.threshold
    out = {"heldout_vs": heldout_vs(sets["heldout"], sets["dev"], risk_of, thr),
           "dev": evaluate(*risk_of(sets["dev"]), thr, sets["dev"].prefixes)}
    for k in ("everyday", "lookalikes"):
        d = out["heldout_vs"][k]
        print(k, {x: round(d[x], 3) for x in ("auroc_vs_benign", "tpr_at_fpr_05", "auroc_vs_benign_prefix_64",
                                               "tpr_at_fpr_05_prefix_64", "tpr", "fpr_benign")})
    d = out["dev"]
    print("dev", {x: round(d[x], 3)
                  for x in ("auroc_vs_benign", "tpr_at_fpr_05", "tpr", "fpr_benign", "fpr_lookalike")})
    dest = Path(args.out) if args.out else work / "shipped_before.json"
    with open(dest, "w") as f:
        json.dump(out, f, default=float)


# ------------------------------------------------------------------------------------------------ CLI
COMMANDS = {
    "answers": cmd_answers,
    "seed-label-cache": cmd_seed_label_cache,
    "request-features": cmd_request_features,
    "request-probes": cmd_request_probes,
    "probes": cmd_probes,
    "split-vs": cmd_split_vs,
    "lookalike-weights": cmd_lookalike_weights,
    "lookalikes": cmd_lookalikes,
    "shipped-vs": cmd_shipped_vs,
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     epilog="See the module docstring for what each subcommand answered.")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, fn in COMMANDS.items():
        p = sub.add_parser(name, help=fn.__doc__.splitlines()[0], description=fn.__doc__)
        p.add_argument("--work", default=DEFAULT_WORK,
                       help="folder of sets.pkl, req.pkl and the outputs (default: %(default)s)")
        if name == "lookalikes":
            p.add_argument("--probe", default="",
                           help="probe JSON file in the shipped form (default: the probe shipped now)")
            p.add_argument("--pooling", default="mean+request", help="the probe's features (default: %(default)s)")
            p.add_argument("--layer", type=int, default=18, help="the probe's layer (default: %(default)s)")
        if name == "shipped-vs":
            p.add_argument("--probe", default="",
                           help=f"probe JSON file in the shipped form (default: WORK/{PROBE_BEFORE_ISSUE13})")
            p.add_argument("--pooling", default="mean", help="the probe's features (default: %(default)s)")
            p.add_argument("--layer", type=int, default=18, help="the probe's layer (default: %(default)s)")
            p.add_argument("--out", default="", help="JSON output (default: WORK/shipped_before.json)")
        p.set_defaults(fn=fn)
    args = parser.parse_args(argv)
    args.fn(args)


if __name__ == "__main__":
    main()
