"""Streaming training on the daily synthetic log: speed, memory per day, vocabulary churn, staleness.

Generates ``--days`` days of ``--events-per-day`` events (``terarec.data.sources.synthetic_daily``:
new users and items every day, items age out, interests drift), then streams
``configs/stream/<model>.yaml`` over them, one chunk per day, with ``--threads`` threads, and
reports per day:

- ``events_per_s``: training events per second of the streaming run (and the whole pass's rate,
  evaluation, commits and deltas included);
- ``rss_mb``: the process's resident memory at the end of each day (after its commit); the need is a
  slope after day 3 below 1% of day 3's RSS per day (least squares over days 3..D);
- the vocabulary: rows held, ids admitted and evicted per day (all features);
- next-day AUC (each day scored before it is trained on) of (a) the streaming model, (b) the same
  model frozen after day 1 (``stream.train_chunks=1``), (c) a model trained from scratch on the
  3 days before, for each day; the need is (a) > (b) on every day after day 3;
- the size of each day's embedding delta beside the base bundle's weights, and the seconds to
  apply the last delta to the bundle with the earlier ones applied.

With a sequence model (``--model hstu`` or ``sasrec``: next-item retrieval over the clicks,
``terarec.train.sequence_stream``) it reports per day instead: next-day NDCG@10 and HR@10 (each
user's first click of the day ranked from the clicks before it, against the catalogue held) of
(a) the streaming model and (b) the same model frozen after day 1, the users ranked, the share
of targets the catalogue does not hold (new items, or items aged out), the catalogue size and
the items admitted and evicted, events/s and RSS.

    python bench/stream.py                      # 30 days x 3.4M events (100M; hours on 2 cores)
    python bench/stream.py --events-per-day 300000
    python bench/stream.py --quick              # 3 days x 200k events
    python bench/stream.py --events-per-day 1000000 --capacity 300000 --skip-window   # without (c)
    python bench/stream.py --capacity 600000 --window-every 5   # 100M, (c) on days 5, 10, ..., 30
    python bench/stream.py --model hstu --events-per-day 100000    # a sequence model, 30 days

Prints progress, then one JSON object as its last line.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import terarec  # noqa: E402,F401  (before torch: passive OpenMP waits)
import numpy as np  # noqa: E402

from terarec.data.sources.synthetic_daily import DailyConfig, write_daily  # noqa: E402
from terarec.serve.bundle import load_bundle  # noqa: E402
from terarec.serve.delta import apply_delta  # noqa: E402
from terarec.stream.loop import folder_source, stream  # noqa: E402
from terarec.train.experiment import load_config  # noqa: E402

WINDOW_DAYS = 3


def rss_mb() -> float:
    """This process's resident set (VmRSS), in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


class MeasuredSource:
    """A chunk source that notes the RSS each time the run asks for the next chunk (after a commit)."""

    def __init__(self, inner) -> None:
        self.inner, self.rss = inner, []

    def next_chunk(self, after):
        if after is not None:
            self.rss.append(round(rss_mb(), 1))
        return self.inner.next_chunk(after)

    def per_chunk(self, chunks: int) -> list[float]:
        """One RSS per chunk. The run reads the last chunk's when it asks for the next (and gets none);
        a run that stops without asking gets it read now. (Reading it after the run as well counted a
        31st, post-run value of 30 days, which pulled the slope down.)"""
        if len(self.rss) < chunks:
            self.rss.append(round(rss_mb(), 1))
        return self.rss[:chunks]


def config_for(args: argparse.Namespace, data: Path, runs: Path, name: str, **stream_options):
    overrides = [f"data.path={data}", f"run_dir={runs}", f"name={name}", f"train.threads={args.threads}",
                 f"embedding.capacity={args.capacity}", f"train.seed={args.seed}", "train.log_every=1000"]
    overrides += [f"stream.{key}={value}" for key, value in stream_options.items()]
    return load_config(ROOT / "configs" / "stream" / f"{args.model}.yaml", overrides)


def window_folder(data: Path, days: list[str], where: Path) -> Path:
    """A folder holding links to the given days only."""
    shutil.rmtree(where, ignore_errors=True)
    where.mkdir(parents=True)
    for name in days:
        os.symlink(data / name, where / name)
    return where


def window_aucs(args: argparse.Namespace, data: Path, runs: Path, work: Path, names: list[str]) -> list[float | None]:
    """(c): for every ``--window-every``'th day d (1-based d = k, 2k, ...; day 1 never), a model trained
    from scratch on the ``WINDOW_DAYS`` days before d, scored on d; None on the days not scored."""
    aucs: list[float | None] = [None] * len(names)
    for day in range(1, len(names)):
        if (day + 1) % args.window_every:
            continue
        days = names[max(0, day - WINDOW_DAYS):day + 1]
        folder = window_folder(data, days, work / "window")
        trained = stream(config_for(args, folder, runs, f"window-{day:03d}", train_chunks=len(days) - 1,
                                    delta_every=0), progress=False).chunks
        aucs[day] = trained[-1]["valid"]["auc"]
        print(f"window of {len(days) - 1} days before day {day + 1}: auc {aucs[day]:.4f}", flush=True)
    return aucs


def slope_share(values: list[float], first_day: int) -> float:
    """Least-squares slope per day over days ``first_day``.. (1-based), as a share of that day's value."""
    tail = np.asarray(values[first_day - 1:], dtype=np.float64)
    if tail.size < 2:
        return float("nan")
    slope = np.polyfit(np.arange(tail.size), tail, 1)[0]
    return float(slope / tail[0])


def sequence_summary(args: argparse.Namespace, data: Path, runs: Path) -> dict:
    """A sequence model streamed over the days, and frozen after day 1: next-day ranking per day."""
    config = config_for(args, data, runs, "streaming")
    source = MeasuredSource(folder_source(config))
    started = time.perf_counter()
    chunks = stream(config, progress=False, source=source).chunks
    pass_seconds = time.perf_counter() - started
    source.rss = source.per_chunk(len(chunks))
    frozen = stream(config_for(args, data, runs, "frozen", train_chunks=1), progress=False).chunks

    def series(run: list[dict], name: str, digits: int = 4) -> list:
        return [round(c["valid"][name], digits) if name in c["valid"] else None for c in run]

    def not_held_share(run: list[dict]) -> list:
        return [round(c["valid"]["targets_not_held"] / c["valid"]["count"], 4) if c["valid"]["count"] else None
                for c in run]

    streaming_ndcg, frozen_ndcg = series(chunks, "ndcg@10"), series(frozen, "ndcg@10")
    print(f"streaming: {pass_seconds:.0f}s, next-day ndcg@10 {streaming_ndcg}", flush=True)
    print(f"frozen after day 1: next-day ndcg@10 {frozen_ndcg}", flush=True)
    positives = sum(c["carried"]["positives"] for c in chunks)
    train_seconds = sum(c["train_seconds"] for c in chunks)
    ranked = range(1, len(chunks))  # day 1 has no history to rank from
    return {
        "benchmark": "stream", "model": args.model, "task": "sequential", "days": args.days,
        "events_per_day": args.events_per_day, "events": sum(c["rows"] for c in chunks), "positives": positives,
        "threads": args.threads, "capacity": args.capacity, "load_average": os.getloadavg()[0],
        "pass_seconds": round(pass_seconds, 1),
        "train_positives_per_s": round(positives / max(train_seconds, 1e-9)),
        "per_day": {
            "ndcg@10_streaming": streaming_ndcg, "ndcg@10_frozen_after_day1": frozen_ndcg,
            "hr@10_streaming": series(chunks, "hr@10"), "hr@10_frozen_after_day1": series(frozen, "hr@10"),
            "users_ranked": [c["valid"]["count"] for c in chunks],
            "targets_not_held_share_streaming": not_held_share(chunks),
            "targets_not_held_share_frozen": not_held_share(frozen),
            "catalogue_streaming": [c["valid"]["catalogue"] for c in chunks],
            "catalogue_frozen": [c["valid"]["catalogue"] for c in frozen],
            "admitted": [c["vocab"]["admitted"] for c in chunks],
            "evicted": [c["vocab"]["evicted"] for c in chunks],
            "users_held": [c["carried"]["users"] for c in chunks],
            "positives_per_s": [round(c["carried"]["positives"] / max(c["train_seconds"], 1e-9)) for c in chunks],
            "rss_mb": source.rss,
        },
        "mean_ndcg@10_days_2_on": {"streaming": float(np.mean([streaming_ndcg[d] for d in ranked])),
                                   "frozen": float(np.mean([frozen_ndcg[d] for d in ranked]))},
        "streaming_beats_frozen_every_day_after_day3": (all(streaming_ndcg[d] > frozen_ndcg[d]
                                                            for d in range(3, len(chunks)))
                                                        if len(chunks) > 3 else None),
        "rss_slope_share_per_day_after_day3": slope_share(source.rss, 3) if len(source.rss) >= 4 else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="3 days of 200k events")
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--events-per-day", type=int, default=3_400_000)
    parser.add_argument("--model", default="dlrm", help="configs/stream/<model>.yaml")
    parser.add_argument("--capacity", type=int, default=0,
                        help="managed-vocabulary rows per feature (default: 200,000; sequence models: 12 days of "
                             "new items, about 1.2x the catalogue, as negatives are drawn from every row)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-window", action="store_true", help="skip (c), which trains 3 days for every day")
    parser.add_argument("--window-every", type=int, default=1,
                        help="score (c) on every k-th day only (each costs 3 days of training)")
    parser.add_argument("--work", type=Path, default=None, help="folder for data and runs (default: a temp folder)")
    args = parser.parse_args()
    if args.quick:
        args.days, args.events_per_day = 3, 200_000
    work = args.work or Path(tempfile.mkdtemp(prefix="terarec-stream-"))
    data, runs = work / "days", work / "runs"
    daily = DailyConfig(days=args.days, events_per_day=args.events_per_day,
                        new_users_per_day=max(100, args.events_per_day // 50),
                        new_items_per_day=max(50, args.events_per_day // 400), seed=args.seed)
    started = time.perf_counter()
    write_daily(daily, data, overwrite=True)
    generate_seconds = time.perf_counter() - started
    print(f"generated {args.days} days x {args.events_per_day:,} events in {generate_seconds:.0f}s", flush=True)
    sequential = load_config(ROOT / "configs" / "stream" / f"{args.model}.yaml").task == "sequential"
    args.capacity = args.capacity or (12 * daily.new_items_per_day if sequential else 200_000)
    if sequential:
        summary = sequence_summary(args, data, runs)
        summary.update(generate_seconds=round(generate_seconds, 1))
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
        print(json.dumps(summary))
        return

    # (a) the streaming model
    config = config_for(args, data, runs, "streaming")
    source = MeasuredSource(folder_source(config))
    started = time.perf_counter()
    result = stream(config, progress=False, source=source)
    pass_seconds = time.perf_counter() - started
    chunks = result.chunks
    source.rss = source.per_chunk(len(chunks))
    streaming_auc = [c["valid"]["auc"] for c in chunks]
    print(f"streaming: {pass_seconds:.0f}s, next-day auc {[round(a, 4) for a in streaming_auc]}", flush=True)

    # deltas: size per day beside the base bundle's weights; time to apply the last one
    run_dir = result.run_dir
    deltas = sorted((run_dir / "deltas").iterdir())
    delta_bytes = [sum(f.stat().st_size for f in d.iterdir()) for d in deltas]
    base_bytes = (run_dir / "bundle" / "ranking" / "weights.safetensors").stat().st_size
    bundle = load_bundle(run_dir / "bundle", threads=args.threads)
    for delta in deltas[:-1]:
        bundle = apply_delta(bundle, delta)
    started = time.perf_counter()
    apply_delta(bundle, deltas[-1])
    apply_seconds = time.perf_counter() - started

    # (b) frozen after day 1
    frozen = stream(config_for(args, data, runs, "frozen", train_chunks=1, delta_every=0), progress=False).chunks
    frozen_auc = [c["valid"]["auc"] for c in frozen]
    print(f"frozen after day 1: next-day auc {[round(a, 4) for a in frozen_auc]}", flush=True)

    # (c) from scratch on the 3 days before each day (every --window-every'th day)
    names = [c["name"] for c in chunks]
    window_auc = [None] * len(names) if args.skip_window else window_aucs(args, data, runs, work, names)
    scored = [day for day, auc in enumerate(window_auc) if auc is not None]

    trained_rows = sum(c["rows"] for c in chunks)
    train_seconds = sum(c["train_seconds"] for c in chunks)
    after_day3 = range(3, len(chunks))  # 0-based days 3.. are the days after day 3
    summary = {
        "benchmark": "stream", "model": args.model, "days": args.days, "events_per_day": args.events_per_day,
        "events": trained_rows, "threads": args.threads, "capacity_per_feature": args.capacity,
        "load_average": os.getloadavg()[0],
        "generate_seconds": round(generate_seconds, 1), "pass_seconds": round(pass_seconds, 1),
        "train_events_per_s": round(trained_rows / max(train_seconds, 1e-9)),
        "pass_events_per_s": round(trained_rows / pass_seconds),
        "projected_hours_for_100M": round(100e6 / (trained_rows / pass_seconds) / 3600, 2),
        "per_day": {
            "events_per_s": [c["examples_per_s"] for c in chunks],
            "rss_mb": source.rss,
            "vocabulary_size": [c["vocab"]["size"] for c in chunks],
            "admitted": [c["vocab"]["admitted"] for c in chunks],
            "evicted": [c["vocab"]["evicted"] for c in chunks],
            "auc_streaming": streaming_auc, "auc_frozen_after_day1": frozen_auc, "auc_window_3_days": window_auc,
            "delta_bytes": delta_bytes,
        },
        "rss_slope_share_per_day_after_day3": slope_share(source.rss, 3) if len(source.rss) >= 4 else None,
        "streaming_beats_frozen_every_day_after_day3": (all(streaming_auc[d] > frozen_auc[d] for d in after_day3)
                                                        if len(chunks) > 3 else None),
        "mean_auc": {"streaming": float(np.mean(streaming_auc[1:])), "frozen": float(np.mean(frozen_auc[1:])),
                     "window": float(np.mean([window_auc[d] for d in scored])) if scored else None},
        "mean_auc_on_window_days": ({"days": [d + 1 for d in scored],
                                     "streaming": float(np.mean([streaming_auc[d] for d in scored])),
                                     "frozen": float(np.mean([frozen_auc[d] for d in scored])),
                                     "window": float(np.mean([window_auc[d] for d in scored]))} if scored else None),
        "base_bundle_weights_bytes": base_bytes,
        "delta_share_of_full_mean": round(float(np.mean(delta_bytes)) / base_bytes, 4),
        "apply_last_delta_seconds": round(apply_seconds, 3),
    }
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
