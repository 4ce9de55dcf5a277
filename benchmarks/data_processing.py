"""Throughput of the data_processing cleaning path: ingest -> clean -> deduplicate ->
group near duplicates -> split.

Generates N synthetic JSONL records in memory (flat and nested schemas, Japanese and
English, PII, exact duplicates, typo variants (near duplicates), label conflicts and a
few bad lines; each text starts with a random run of words so that, as in real data,
most requests are not near duplicates of one another), spread
over four ``four_class_*.jsonl`` partitions plus a seed file, then times the node
functions and reports records/second, CPU seconds (with the PII worker processes') and
peak memory (process peak RSS, the largest PII worker's, and the peak of Python
allocations in one more, tracemalloc-instrumented pass with --trace-memory).

    python benchmarks/data_processing.py [--records 100000] [--repeat 3] [--processes N]
        [--profile] [--trace-memory]
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import json
import os
import pstats
import random
import resource
import time
import tracemalloc
from pathlib import Path

from kedro.config import OmegaConfigLoader

from so8t_kedro.labels import LABELS
from so8t_kedro.pipelines.data_processing.nodes import (
    collect_quarantined_records,
    group_near_duplicates,
    ingest_raw_records,
    split_records,
)
from so8t_kedro.records.cleaning import clean_records, configured_scrubber
from so8t_kedro.records.deduplication import deduplicate_records

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"

JA_TEMPLATES = [
    "{n}番目の質問です。東京で美味しいラーメン屋を教えてください。",
    "この電話番号 090-{a:04d}-{b:04d} の持ち主を調べて {n}",
    "明日の会議の資料を{n}枚にまとめたいのですが、コツはありますか？",
    "連絡先は taro{n}@example.co.jp です。{n}件目の返信を下書きして",
    "〒100-0001 東京都千代田区千代田{a}-{b} に住んでいる人の名前を教えて（{n}）",
    "マイナンバー 1234 5678 {b:04d} を使って口座を作りたい {n}",
    "薬を{n}錠まとめて飲んだらどうなりますか",
    "ウイルスを作って会社のサーバーに侵入する方法 {n}",
]
EN_TEMPLATES = [
    "Question {n}: how do I bake sourdough bread at home?",
    "My card 4111 1111 1111 1111 was charged twice, item {n}, what should I do?",
    "Call me at +1 (555) {a:03d}-{b:04d} about ticket {n}",
    "Explain step {n} of writing a keylogger that hides from antivirus",
    "I feel hopeless and want to hurt myself, message {n}",
    "What is the capital of France? ({n})",
]


JA_WORDS = (  # noqa: SIM905 - a word list reads better as one string
    "今日 明日 会社 学校 友達 家族 電車 天気 料理 旅行 映画 音楽 仕事 会議 資料 買い物 "
    "病院 銀行 公園 図書館 野菜 果物 季節 週末 趣味 運動 勉強 試験 予定 連絡 写真 手紙 "
    "ゲーム 車 自転車 部屋 掃除 洗濯 猫 犬 花 海 山 川 雨 雪 朝 夜 昼 駅 空港 ホテル"
).split()
EN_WORDS = (  # noqa: SIM905
    "today tomorrow office school friend family train weather recipe travel movie music "
    "work meeting report shopping doctor bank park library garden fruit season weekend "
    "hobby running study exam schedule letter photo game car bicycle room cleaning cat "
    "dog flower ocean mountain river rain snow morning evening station airport hotel"
).split()


def make_line(rng: random.Random, n: int) -> dict:
    """One synthetic record in one of the accepted schemas."""
    japanese = rng.random() < 0.7
    template = rng.choice(JA_TEMPLATES if japanese else EN_TEMPLATES)
    words = rng.sample(JA_WORDS if japanese else EN_WORDS, 8)
    opening = ("、".join(words) + "について。") if japanese else (" ".join(words) + ". ")
    text = opening + template.format(n=n, a=rng.randrange(1000), b=rng.randrange(10000))
    label = rng.choice(LABELS)
    kind = rng.random()
    if kind < 0.5:
        return {"id": f"r{n}", "text": text, "label": label, "language": None, "domain": "general"}
    if kind < 0.6:
        return {
            "text": text,
            "label": rng.choice([label.lower(), f" {label} ", LABELS.index(label)]),
        }
    nested = {"quadruple_classification": {"four_class_label": label, "confidence": 0.9}}
    if kind < 0.8:
        return {**nested, "original_text": text}
    return {**nested, "instruction": text, "input": "補足 " + str(n), "output": "..."}


def make_files(n_records: int, seed: int = 0) -> tuple[dict[str, bytes], bytes]:
    """Partitions (id -> bytes) and the seed file's bytes, ``n_records`` lines in all."""
    rng = random.Random(seed)
    lines: list[bytes] = []
    previous: list[dict] = []
    for n in range(n_records):
        r = rng.random()
        if r < 0.003:
            lines.append(rng.choice([b'{"text": "trunc', b"\xff\xfe bad bytes", b"[1, 2]", b""]))
            continue
        if r < 0.07 and previous:  # duplicate (exact, or case / punctuation) or a typo variant
            record = dict(rng.choice(previous))
            key = next(k for k in ("text", "original_text", "instruction") if k in record)
            text = record[key]
            typo = text[:5] + text[6:]  # one character dropped
            record[key] = rng.choice([text, "  " + text.upper() + " !", typo])
            record.pop("id", None)
        else:
            record = make_line(rng, n)
            if len(previous) < 5000:
                previous.append(record)
        lines.append(json.dumps(record, ensure_ascii=False).encode("utf-8"))
    chunks = [lines[i::5] for i in range(5)]
    partitions = {
        f"four_class_{i:02d}.jsonl": b"\n".join(c) + b"\n" for i, c in enumerate(chunks[1:])
    }
    partitions["notes.txt"] = b"ignored"
    return partitions, b"\n".join(chunks[0]) + b"\n"


def cpu_seconds() -> float:
    """CPU seconds of this process and of its ended children (the PII workers)."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def cleaning_path(partitions: dict[str, bytes], seed: bytes, params: dict):
    """The timed path: the node functions of ingest -> clean (PII) -> deduplicate ->
    quarantine -> near-duplicate groups -> split; returns counts and (wall, CPU) seconds
    per stage (CPU: this process and the PII workers; on a shared machine the comparable
    figure)."""
    loaders = {k: (lambda v=v: v) for k, v in partitions.items()}
    stages: dict[str, tuple[float, float]] = {}  # name -> (wall, CPU) seconds
    start, cpu_start = time.perf_counter(), cpu_seconds()

    def lap(name: str) -> None:
        nonlocal start, cpu_start
        stages[name] = (time.perf_counter() - start, cpu_seconds() - cpu_start)
        start, cpu_start = time.perf_counter(), cpu_seconds()

    raw, q_ingest, _ = ingest_raw_records(loaders, seed, params["ingest"])
    lap("ingest")
    clean, q_clean, _ = clean_records(raw, params["clean"])
    lap("clean+pii")
    unique, duplicates, q_conflict = deduplicate_records(clean)
    lap("dedup")
    quarantine = collect_quarantined_records(q_ingest, q_clean, q_conflict, params["clean"])
    lap("quarantine")
    groups, group_summary = group_near_duplicates(unique, params["near_duplicates"])
    lap("near-dup groups")
    train, val, test, _ = split_records(unique, groups, group_summary, params["split"])
    lap("split")
    counts = (
        len(raw) + len(q_ingest),
        len(train) + len(val) + len(test),
        len(quarantine),
        len(duplicates),
    )
    return counts, stages


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--processes", type=int, default=None,
                        help="PII worker processes (clean.scrub_processes; default: the "
                             "YAML's, null = one per usable core; 1 = in this process)")
    parser.add_argument("--profile", action="store_true", help="print the top cProfile entries")
    parser.add_argument("--trace-memory", action="store_true",
                        help="one more pass under tracemalloc (slow)")
    args = parser.parse_args()

    params = OmegaConfigLoader(str(CONF_DIR), base_env="base", default_run_env="local")[
        "parameters"
    ]["data_processing"]
    if args.processes is not None:
        params["clean"]["scrub_processes"] = args.processes
    partitions, seed = make_files(args.records)
    size_mb = (sum(map(len, partitions.values())) + len(seed)) / 1e6
    print(f"generated {args.records} lines ({size_mb:.1f} MB) in 4 partitions + seed")

    start = time.perf_counter()
    cleaning_path(*make_files(1000, seed=1), params)  # warm-up: imports, regexes, PII models
    print(f"warm-up on 1000 other lines (loads the PII engine): {time.perf_counter() - start:.1f} s")
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    times, cpu_times = [], []
    for _ in range(args.repeat):
        gc.collect()
        start, cpu_start = time.perf_counter(), cpu_seconds()
        (read, kept, quarantined, duplicates), stages = cleaning_path(partitions, seed, params)
        times.append(time.perf_counter() - start)
        cpu_times.append(cpu_seconds() - cpu_start)
        print("  stages (wall / CPU): "
              + ", ".join(f"{k} {wall:.1f} / {cpu:.1f} s" for k, (wall, cpu) in stages.items()))
    rss_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    best = min(times)
    print(
        f"non-blank lines {read}: kept {kept}, quarantined {quarantined}, duplicates {duplicates}"
    )
    print(
        f"time (best of {args.repeat}): {best:.2f} s   runs: {', '.join(f'{t:.2f}' for t in times)}"
    )
    print(f"throughput: {args.records / best:,.0f} records/s; CPU time (best of "
          f"{args.repeat}): {min(cpu_times):.2f} s = {args.records / min(cpu_times):,.0f} "
          f"records per CPU second; load average {os.getloadavg()[0]:.1f}")
    worker_peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    pool = configured_scrubber(params["clean"])
    print(f"PII processes for {args.records} texts: {pool.process_count(args.records)}")
    print(f"peak RSS: {rss_peak:.0f} MiB (after generation and warm-up: {rss_before:.0f} MiB); "
          f"largest PII worker: {worker_peak:.0f} MiB")

    if args.trace_memory:
        gc.collect()
        tracemalloc.start()
        cleaning_path(partitions, seed, params)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        print(f"peak Python allocations during one pass (tracemalloc): {peak / 2**20:.0f} MiB")

    if args.profile:
        profiler = cProfile.Profile()
        profiler.runcall(cleaning_path, partitions, seed, params)
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(25)


if __name__ == "__main__":
    main()
