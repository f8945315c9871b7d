"""Scoring an evaluation: one prediction per question, accuracies with intervals, the reports,
and the comparison of two runs.

The figures are derived from the run's log (``results.jsonl``, one record per video) and
nothing else, so they can always be rebuilt and recounted: :func:`predictions` turns the log
into one line per question, :func:`build_report` counts those lines, and ``report.json`` is the
one home of the figures (``report.md`` renders the same dictionary for people).

Each question ends in one ``state``:

- ``parsed``: the reply commits to a letter by the answer rule (:func:`videovlm.text.
  extract_choice`); right or wrong.
- ``unparseable``: the reply was written but the rule reads no letter from it. Counted wrong in
  ``accuracy``, and counted apart so a low score from rambling is visible.
- ``missing``: the video was not found, or could not be read or decoded (the batch recorded an
  error). Left out of ``accuracy``; counted wrong in ``accuracy_all``, over every question.
- ``pending``: the run stopped before its video (an interrupted run); in no accuracy.

``accuracy_logits`` scores the letter the model rated highest at the answer's first token, on
the same answered questions; it is never mixed into ``accuracy``.

Intervals are 95% and clustered by video, since a video's questions share its frames and are not
independent: the cluster-robust (CR1) standard error of a mean, with a Student t quantile at
``videos - 1`` degrees of freedom (:func:`clustered_mean`). The same estimator gives
``eval-compare``'s paired interval, on the per-question differences of two runs.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from videovlm._version import __version__
from videovlm.errors import VideoVLMError
from videovlm.files import atomic_write

PREDICTIONS_NAME = "predictions.jsonl"
REPORT_NAME = "report.json"
REPORT_MD_NAME = "report.md"

LEVEL = 0.95
METHOD = ("cluster-robust (CR1) standard error of the mean, clustered by video, with a "
          "Student t quantile at (videos - 1) degrees of freedom; clipped to the possible range")

BREAKDOWN_FIELDS = ("category", "question_category", "sub_category", "duration", "domain",
                    "task_type")
"""The benchmark keys (``EvalItem.fields``) a report is broken down by, when questions have
them: CinePile's ``question_category``, Video-MME's ``duration`` bucket, ``domain``,
``sub_category`` and ``task_type``; ``category`` for hand-made sets."""

ANSWERED = ("parsed", "unparseable")
STATES = (*ANSWERED, "missing", "pending")


# -- statistics ---------------------------------------------------------------------------------

def _t_within(t: float, df: int) -> float:
    """P(|T| < t) for Student's t with ``df`` degrees of freedom: the finite series of
    Abramowitz & Stegun 26.7.3-4 (exact for whole ``df``, which a cluster count always is)."""
    theta = math.atan(t / math.sqrt(df))
    c2, s = math.cos(theta) ** 2, math.sin(theta)
    if df % 2:
        term = total = math.cos(theta)
        for k in range(1, (df - 1) // 2):
            term *= 2 * k / (2 * k + 1) * c2
            total += term
        return 2 / math.pi * (theta + (s * total if df > 1 else 0.0))
    term = total = 1.0
    for k in range(1, df // 2):
        term *= (2 * k - 1) / (2 * k) * c2
        total += term
    return s * total


def t_quantile(level: float, df: int) -> float:
    """The t such that P(|T| < t) = ``level`` (two-sided): 12.706 for 95% at 1 degree of freedom,
    1.960 in the limit. Found by bisection on :func:`_t_within`."""
    lo, hi = 0.0, 1.0
    while _t_within(hi, df) < level:
        hi *= 2
    while hi - lo > 1e-9:
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if _t_within(mid, df) < level else (lo, mid)
    return (lo + hi) / 2


@dataclass(frozen=True)
class Estimate:
    """A mean over questions, its clustered standard error and interval (None with fewer than
    two videos: one video says nothing about the next one)."""

    value: float | None
    low: float | None
    high: float | None
    se: float | None
    n: int
    clusters: int


def clustered_mean(values: Sequence[float], clusters: Sequence[str], *,
                   bounds: tuple[float, float] = (0.0, 1.0), level: float = LEVEL) -> Estimate:
    """The mean of ``values`` (one per question) with a ``level`` interval clustered by
    ``clusters`` (each question's video).

    CR1: with N questions in G videos and residuals e_i = y_i - mean,
    Var = G / (G - 1) * sum over videos of (sum of the video's e_i)^2 / N^2; the interval is
    mean +- t(level, G - 1) * sqrt(Var), clipped to ``bounds``. For 0/1 values this is the
    accuracy's interval; for the differences of two runs (-1, 0, 1) the paired one.
    """
    n, groups = len(values), len(set(clusters))
    if n == 0:
        return Estimate(None, None, None, None, 0, 0)
    mean = sum(values) / n
    if groups < 2:
        return Estimate(mean, None, None, None, n, groups)
    sums: dict[str, float] = {}
    for y, g in zip(values, clusters, strict=True):
        sums[g] = sums.get(g, 0.0) + (y - mean)
    se = math.sqrt(groups / (groups - 1) * sum(s * s for s in sums.values())) / n
    half = t_quantile(level, groups - 1) * se
    return Estimate(mean, max(bounds[0], mean - half), min(bounds[1], mean + half), se, n,
                    groups)


# -- predictions --------------------------------------------------------------------------------

def predictions(items: Sequence[Any], records: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """One line per question of ``items`` (:class:`videovlm.evaluate.EvalItem`, file order), from
    the run's records by video: what was asked, the gold letter, the raw reply, the letter the
    answer rule reads from it (``parsed``), the logits letter, whether each is right, the
    question's ``state`` and the benchmark's own keys (``fields``)."""
    out: list[dict[str, Any]] = []
    position: dict[str, int] = {}
    for item in items:
        rec = records.get(item.video)
        k = position[item.video] = position.get(item.video, -1) + 1
        line: dict[str, Any] = {
            "id": item.id, "video": item.video, "question": item.question,
            "choices": list(item.choices), "answer": item.answer, "raw": None, "parsed": None,
            "logits": None, "correct": None, "correct_logits": None, "state": "pending",
            "error": None, "fields": item.fields,
        }
        if rec is not None and rec.get("error") is not None:
            line.update(state="missing",
                        error=f"{rec['error']['type']}: {rec['error']['message']}")
        elif rec is not None:
            got = rec["answers"][k]
            parsed = got["choice"] if got.get("choice_source") == "text" else None
            logits = got.get("choice_logits",
                             got["choice"] if got.get("choice_source") == "logits" else None)
            line.update(raw=got["answer"], parsed=parsed, logits=logits,
                        correct=parsed == item.answer, correct_logits=logits == item.answer,
                        state="parsed" if parsed else "unparseable")
        out.append(line)
    return out


def _estimate(preds: Sequence[dict[str, Any]], key: str) -> dict[str, Any]:
    est = clustered_mean([float(bool(p[key])) for p in preds], [p["video"] for p in preds])

    def r(x: float | None) -> float | None:
        return None if x is None else round(x, 6)

    return {"value": r(est.value), "interval": None if est.low is None else [r(est.low),
                                                                             r(est.high)],
            "se": r(est.se)}


def figures(preds: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The counts and accuracies of some predictions (a run's, or one category's).

    ``accuracy``: parsed letters right over answered questions (unparseable ones are wrong);
    ``accuracy_logits``: logits letters right, same questions; ``accuracy_all``: right over
    answered and missing questions (missing ones are wrong). Each has its clustered interval.
    """
    answered = [p for p in preds if p["state"] in ANSWERED]
    scored = [p for p in preds if p["state"] != "pending"]
    counts = {state: sum(p["state"] == state for p in preds) for state in STATES}
    out: dict[str, Any] = {
        "questions": len(preds), "answered": len(answered),
        "unparseable": counts["unparseable"], "missing": counts["missing"],
        "pending": counts["pending"], "videos": len({p["video"] for p in preds}),
        "correct": sum(bool(p["correct"]) for p in answered),
        "correct_logits": sum(bool(p["correct_logits"]) for p in answered),
    }
    for name, subset, key in (("accuracy", answered, "correct"),
                              ("accuracy_logits", answered, "correct_logits"),
                              ("accuracy_all", scored, "correct")):
        est = _estimate(subset, key)
        out[name], out[f"{name}_interval"], out[f"{name}_se"] = (est["value"], est["interval"],
                                                                 est["se"])
    return out


def breakdowns(preds: Sequence[dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """:func:`figures` per value of each :data:`BREAKDOWN_FIELDS` key the questions have (values
    in order of first appearance; questions without the key are in no group of it)."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for key in BREAKDOWN_FIELDS:
        groups: dict[str, list[dict[str, Any]]] = {}
        for p in preds:
            if p["fields"].get(key) is not None:
                groups.setdefault(str(p["fields"][key]), []).append(p)
        if groups:
            out[key] = {value: figures(group) for value, group in groups.items()}
    return out


def missing_videos(preds: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The videos whose questions are missing, with their question count and error."""
    out: dict[str, dict[str, Any]] = {}
    for p in preds:
        if p["state"] == "missing":
            out.setdefault(p["video"], {"video": p["video"], "questions": 0,
                                        "error": p["error"]})["questions"] += 1
    return list(out.values())


def build_report(preds: Sequence[dict[str, Any]], provenance: dict[str, Any]) -> dict[str, Any]:
    """``report.json``'s content: what produced the run (``provenance``: model, protocol,
    frames...), the interval method, the overall figures, the breakdowns and the missing
    videos."""
    return {"videovlm": __version__, **provenance,
            "interval": {"level": LEVEL, "method": METHOD}, **figures(preds),
            "breakdowns": breakdowns(preds), "missing_videos": missing_videos(preds)}


def write_report(out_dir: str | Path, preds: Sequence[dict[str, Any]],
                 provenance: dict[str, Any]) -> dict[str, Any]:
    """Write ``predictions.jsonl``, ``report.json`` and ``report.md`` into ``out_dir``, each whole
    and atomically; return the report."""
    out = Path(out_dir)
    report = build_report(preds, provenance)
    report.update(predictions_file=str(out / PREDICTIONS_NAME),
                  report_file=str(out / REPORT_NAME), report_md=str(out / REPORT_MD_NAME))
    atomic_write(out / PREDICTIONS_NAME,
                 "".join(json.dumps(p, ensure_ascii=False) + "\n" for p in preds))
    atomic_write(out / REPORT_NAME, json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    atomic_write(out / REPORT_MD_NAME, render_markdown(report))
    return report


# -- Markdown -----------------------------------------------------------------------------------

def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}"


def _interval(iv: Sequence[float] | None) -> str:
    return "n/a" if iv is None else f"{_pct(iv[0])} to {_pct(iv[1])}"


_COLUMNS = "| | questions | answered | unparseable | missing | accuracy % | 95% interval " \
           "| logits % | all questions % |"


def _row(name: str, f: dict[str, Any]) -> str:
    return (f"| {name} | {f['questions']} | {f['answered']} | {f['unparseable']} | "
            f"{f['missing']} | {_pct(f['accuracy'])} | {_interval(f['accuracy_interval'])} | "
            f"{_pct(f['accuracy_logits'])} | {_pct(f['accuracy_all'])} |")


def render_markdown(report: dict[str, Any]) -> str:
    """``report.md``: the report's figures as tables, then how they were made."""
    model = report["model"]
    lines = [f"# Evaluation: {report['protocol']}", "", _COLUMNS,
             "|" + "---|" * (_COLUMNS.count("|") - 1), _row("all", report)]
    if report["pending"]:
        lines += ["", f"{report['pending']} questions not run yet (interrupted): run the same "
                  "command again to finish."]
    for key, groups in report["breakdowns"].items():
        lines += ["", f"## By {key}", "", _COLUMNS, "|" + "---|" * (_COLUMNS.count("|") - 1)]
        lines += [_row(value, f) for value, f in groups.items()]
    if report["missing_videos"]:
        lines += ["", "## Missing videos", "",
                  "Their questions are left out of accuracy and counted wrong in "
                  "all-questions accuracy.", ""]
        lines += [f"- `{m['video']}` ({m['questions']} question"
                  f"{'s' if m['questions'] != 1 else ''}): {m['error']}"
                  for m in report["missing_videos"]]
    lines += [
        "", "## How", "",
        f"- model: `{model['id']}`, revision `{model['revision']}`, {model['dtype']} on "
        f"{model['device']}, quantization {model['quantization']}",
        f"- protocol `{report['protocol']}` (recipe `{report['recipe']}`), "
        f"{report['frames']} frames per video",
        f"- videovlm {report['videovlm']}",
        "- accuracy: the letter the answer rule reads from the reply (unparseable replies are "
        "wrong); logits: the option letter scored highest at the answer's first token; all "
        "questions: missing videos' questions counted wrong",
        f"- interval: {int(100 * report['interval']['level'])}%, {report['interval']['method']}",
    ]
    return "\n".join(lines) + "\n"


# -- comparing two runs ------------------------------------------------------------------------

def read_run(folder: str | Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """An eval output folder's report and predictions; one line saying what is wrong when the
    folder is not one."""
    root = Path(folder)
    try:
        report = json.loads((root / REPORT_NAME).read_text(encoding="utf-8"))
        preds = [json.loads(x) for x in
                 (root / PREDICTIONS_NAME).read_text(encoding="utf-8").splitlines() if x.strip()]
        if not isinstance(report, dict) or not all(isinstance(p, dict) and "state" in p
                                                   for p in preds):
            raise ValueError("not an eval report")
    except (OSError, ValueError) as exc:
        why = "missing" if isinstance(exc, FileNotFoundError) else "unreadable"
        raise VideoVLMError(f"{root} is not a videovlm eval output folder ({REPORT_NAME} or "
                            f"{PREDICTIONS_NAME} {why}): give the -o folder of a `videovlm eval` "
                            "run") from None
    return report, preds


def _flips(pairs: Iterable[tuple[dict[str, Any], dict[str, Any]]],
           key: str) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {"right_to_wrong": [], "wrong_to_right": []}
    for a, b in pairs:
        if bool(a[key]) != bool(b[key]):
            out["right_to_wrong" if a[key] else "wrong_to_right"].append(
                {"id": a["id"], "video": a["video"], "answer": a["answer"],
                 "a": a["parsed" if key == "correct" else "logits"],
                 "b": b["parsed" if key == "correct" else "logits"]})
    return out


def compare(a_dir: str | Path, b_dir: str | Path) -> dict[str, Any]:
    """Runs A and B side by side on the questions both answered (matched by id and video): each
    one's accuracy there, B - A with a paired interval clustered by video, and the questions that
    flipped, for the parsed letters and for the logits letters."""
    (ra, pa), (rb, pb) = read_run(a_dir), read_run(b_dir)
    by_key = {(p["id"], p["video"]): p for p in pb}
    common = [(p, by_key[(p["id"], p["video"])]) for p in pa if (p["id"], p["video"]) in by_key]
    pairs = [(a, b) for a, b in common if a["state"] in ANSWERED and b["state"] in ANSWERED]
    if not pairs:
        raise VideoVLMError(f"{a_dir} and {b_dir} have no question answered in both (matched by "
                            "id and video): compare runs of the same questions file")
    videos = [a["video"] for a, _ in pairs]
    out: dict[str, Any] = {
        "a": {"folder": str(a_dir), **_run_info(ra)}, "b": {"folder": str(b_dir), **_run_info(rb)},
        "common": len(pairs), "videos": len(set(videos)),
        "only_a": len(pa) - len(common), "only_b": len(pb) - len(common),
        "not_answered_in_both": len(common) - len(pairs),
        "interval": {"level": LEVEL, "method": METHOD + "; on the per-question differences B - A"},
    }
    for name, key in (("accuracy", "correct"), ("accuracy_logits", "correct_logits")):
        ea = clustered_mean([float(bool(a[key])) for a, _ in pairs], videos)
        eb = clustered_mean([float(bool(b[key])) for _, b in pairs], videos)
        diff = clustered_mean([float(bool(b[key])) - float(bool(a[key])) for a, b in pairs],
                              videos, bounds=(-1.0, 1.0))
        out[name] = {"a": round(ea.value or 0.0, 6), "b": round(eb.value or 0.0, 6),
                     "difference": round(diff.value or 0.0, 6),
                     "interval": None if diff.low is None else [round(diff.low, 6),
                                                                round(diff.high or 0.0, 6)],
                     "flipped": _flips(pairs, key)}
    return out


def _run_info(report: dict[str, Any]) -> dict[str, Any]:
    return {"model": report.get("model", {}).get("id"), "protocol": report.get("protocol"),
            "frames": report.get("frames")}


def compare_text(cmp: dict[str, Any], *, say: Callable[[str], None]) -> None:
    """The comparison for a person: one line per run, the accuracies and the flips."""
    for side in ("a", "b"):
        r = cmp[side]
        say(f"{side.upper()}: {r['folder']} (model {r['model']}, protocol {r['protocol']}, "
            f"{r['frames']} frames)")
    skipped = [f"{cmp[k]} {what}" for k, what in (("only_a", "only in A"), ("only_b", "only in B"),
                                                 ("not_answered_in_both", "not answered in both"))
               if cmp[k]]
    say(f"common questions: {cmp['common']} on {cmp['videos']} videos"
        + (f" ({', '.join(skipped)}: left out)" if skipped else ""))
    for name in ("accuracy", "accuracy_logits"):
        c = cmp[name]
        say(f"{name}: A {_pct(c['a'])}%  B {_pct(c['b'])}%  B-A {100 * c['difference']:+.1f} "
            f"points (95% interval {_diff(c['interval'])}, paired, clustered by video)")
    for name, letter in (("accuracy", "reply"), ("accuracy_logits", "logits")):
        for flip, label in (("right_to_wrong", "right in A, wrong in B"),
                            ("wrong_to_right", "wrong in A, right in B")):
            flips = cmp[name]["flipped"][flip]
            say(f"{label}, by the {letter} letter ({len(flips)}):")
            for f in flips:
                say(f"  {f['id']}  {f['video']}  gold {f['answer']}  A {f['a'] or '-'}  "
                    f"B {f['b'] or '-'}")


def _diff(iv: Sequence[float] | None) -> str:
    return "n/a" if iv is None else f"{100 * iv[0]:+.1f} to {100 * iv[1]:+.1f}"
