"""Curriculum search quality on the teacher-style labelled set, and the fusion tuning that chose the ranking.

    .venv/bin/python bench/search_quality.py             # recall@1/@3 and MRR of the shipped ranking
    .venv/bin/python bench/search_quality.py --before    # + chapter vectors without topics (before)
    .venv/bin/python bench/search_quality.py --tune      # + the grid of weights / candidate counts
    .venv/bin/python bench/search_quality.py --tune --text-only --skip-shipped   # the no-vector fallback

Starts a throw-away embedded PostgreSQL, loads the seed with the real MiniLM (tests/utils/embedder.py;
vectors are cached in --cache, so reruns take seconds), then runs `search_standards` itself for every query
of tests/curriculum/teacher_queries.py, with the class filter (the expected chapter's class) and without,
on the tuning split and on the held-out split (every fifth query, never used to pick weights). `--tune`
replays the same signals in Python to score many weightings cheaply; the weights in
api/curriculum/services.py are the ones it chose.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import pickle
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine

from api.curriculum import services
from api.curriculum.loader import load_curriculum
from api.lib.migrate import upgrade_database
from api.lib.settings import Settings
from tests.curriculum.teacher_queries import TEACHER_QUERIES
from tests.utils.embedder import LocalEmbedder
from tests.utils.servers import embedded_postgres_server

Query = tuple[str, int | None, set[str]]


class CachingEmbedder:
    """LocalEmbedder with an on-disk cache by text, so a rerun does not embed 3,000 texts again."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.cache: dict[str, list[float]] = pickle.loads(path.read_bytes())  # noqa: S301 (our own cache file) if path.exists() else {}
        self.inner = LocalEmbedder()

    async def embed(self, texts: list[str]) -> list[list[float]]:
        todo = [t for t in dict.fromkeys(texts) if t not in self.cache]
        if todo:
            for start in range(0, len(todo), 64):
                chunk = todo[start : start + 64]
                self.cache.update(zip(chunk, await self.inner.embed(chunk), strict=True))
            self.path.write_bytes(pickle.dumps(self.cache))
        return [self.cache[t] for t in texts]


def metrics(ranked: Sequence[Sequence[str]], queries: Sequence[Query]) -> tuple[float, float, float]:
    r1 = r3 = mrr = 0.0
    for codes, (_, _, expected) in zip(ranked, queries, strict=True):
        rank = next((i for i, c in enumerate(codes) if c in expected), None)
        if rank is not None:
            r1 += rank == 0
            r3 += rank < 3
            mrr += 1 / (rank + 1)
    n = len(queries)
    return r1 / n, r3 / n, mrr / n


def splits() -> dict[str, list[Query]]:
    tuning = [q for i, q in enumerate(TEACHER_QUERIES) if i % 5 != 4]
    held_out = [q for i, q in enumerate(TEACHER_QUERIES) if i % 5 == 4]
    return {"tuning": tuning, "held-out": held_out}


async def class_of(sessions: async_sessionmaker[AsyncSession]) -> dict[str, int]:
    async with sessions() as session:
        rows = (await session.execute(text("SELECT code, class_level FROM curriculum_standards"))).all()
    return {r.code: r.class_level for r in rows}


async def run_search(
    sessions: async_sessionmaker[AsyncSession],
    embedder: CachingEmbedder,
    queries: Sequence[Query],
    classes: dict[str, int],
    *,
    with_class: bool,
    search: Callable[..., Any] = services.search_standards,
) -> list[list[str]]:
    out = []
    vectors = await embedder.embed([q for q, _, _ in queries])
    for (query, _, expected), vector in zip(queries, vectors, strict=True):
        first = sorted(expected)[0]
        filters = services.StandardFilters(class_level=classes.get(first) if with_class else None)
        async with sessions() as session:
            page = await search(session, filters, query, vector, cursor=None, limit=10)
        out.append([item.code for item in page.items])
    return out


def print_table(title: str, rows: list[tuple[str, str, str, tuple[float, float, float]]]) -> None:
    print(f"\n{title}")
    print(f"{'ranking':<34}{'split':<10}{'filter':<9}{'n':>5}{'R@1':>7}{'R@3':>7}{'MRR':>7}")
    for name, split, filt, (r1, r3, mrr) in rows:
        n = len(splits()[split])
        print(f"{name:<34}{split:<10}{filt:<9}{n:>5}{r1:>7.3f}{r3:>7.3f}{mrr:>7.3f}")


async def evaluate(
    sessions: async_sessionmaker[AsyncSession],
    embedder: CachingEmbedder,
    name: str,
    search: Callable[..., Any] = services.search_standards,
) -> list[tuple[str, str, str, tuple[float, float, float]]]:
    classes = await class_of(sessions)
    rows = []
    for split, queries in splits().items():
        for with_class in (True, False):
            ranked = await run_search(
                sessions, embedder, queries, classes, with_class=with_class, search=search
            )
            rows.append((name, split, "class" if with_class else "none", metrics(ranked, queries)))
    return rows


async def use_title_only_vectors(
    sessions: async_sessionmaker[AsyncSession], embedder: CachingEmbedder, *, title_only: bool
) -> None:
    """Swap the chapter vectors for ones over title + keywords (what was embedded before topics), or back."""
    from api.curriculum.loader import embedding_text

    async with sessions() as session, session.begin():
        rows = (
            await session.execute(
                text(
                    "SELECT id, kind, text, keywords, topics FROM curriculum_standards WHERE kind = 'chapter'"
                )
            )
        ).all()
        texts = [embedding_text(r.kind, r.text, r.keywords, () if title_only else r.topics) for r in rows]
        vectors = await embedder.embed(texts)
        for row, vector in zip(rows, vectors, strict=True):
            await session.execute(
                text("UPDATE curriculum_standards SET embedding = CAST(:v AS vector) WHERE id = :id"),
                {"v": str(vector), "id": row.id},
            )


# ---- tuning: the same signals, fused in Python ------------------------------------------------------------


async def signals(
    sessions: async_sessionmaker[AsyncSession], embedder: CachingEmbedder, queries: Sequence[Query]
) -> dict[str, Any]:
    """Per query, every row's scores: chapter/outcome cosine, best topic cosine, text ranks."""
    import numpy as np

    async with sessions() as session:
        std = (
            await session.execute(
                text("SELECT id, code, kind, class_level, embedding::text AS e FROM curriculum_standards")
            )
        ).all()
        top = (
            await session.execute(
                text("SELECT standard_id, embedding::text AS e FROM curriculum_topics ORDER BY standard_id")
            )
        ).all()
    ids = [r.id for r in std]
    index = {r.id: i for i, r in enumerate(std)}
    std_m = np.array([json.loads(r.e) for r in std], dtype=np.float32)
    top_m = np.array([json.loads(r.e) for r in top], dtype=np.float32)
    top_owner = np.array([index[r.standard_id] for r in top])
    qv = np.array(await embedder.embed([q for q, _, _ in queries]), dtype=np.float32)
    cos_std = qv @ std_m.T
    cos_top_all = qv @ top_m.T
    cos_top = np.full_like(cos_std, -1.0)
    for j in range(len(std)):
        mask = top_owner == j
        if mask.any():
            cos_top[:, j] = cos_top_all[:, mask].max(axis=1)
    txt_std = np.zeros_like(cos_std)
    txt_top = np.zeros_like(cos_std)
    async with sessions() as session:
        for qi, (query, _, _) in enumerate(queries):
            tsq = "to_tsquery('english', replace(plainto_tsquery('english', :q)::text, ' & ', ' | '))"
            for row in await session.execute(
                text(
                    f"SELECT id, ts_rank_cd(search_text, {tsq}) AS r FROM curriculum_standards "  # noqa: S608
                    f"WHERE search_text @@ {tsq}"
                ),
                {"q": query},
            ):
                txt_std[qi, index[row.id]] = row.r
            for row in await session.execute(
                text(
                    f"SELECT standard_id, max(ts_rank_cd(search_text, {tsq})) AS r "  # noqa: S608
                    f"FROM curriculum_topics WHERE search_text @@ {tsq} GROUP BY standard_id"
                ),
                {"q": query},
            ):
                txt_top[qi, index[row.standard_id]] = row.r
    has_topics = cos_top.max(axis=0) > -1.0
    return {
        "has_topics": has_topics,
        # an outcome, or a chapter without topics, stands as its own single "topic"
        "cos_top_fill": np.where(has_topics, cos_top, cos_std),
        "txt_top_fill": np.where(has_topics, txt_top, txt_std),
        "codes": [r.code for r in std],
        "kinds": np.array([r.kind for r in std]),
        "classes": np.array([r.class_level for r in std]),
        "ids": ids,
        "cos_std": cos_std,
        "cos_top": cos_top,
        "txt_std": txt_std,
        "txt_top": txt_top,
    }


def rank_positions(scores: Any, mask: Any) -> Any:
    """1-based rank of each row by score among rows in mask (rows outside or with score <= 0: inf)."""
    import numpy as np

    order = np.argsort(-np.where(mask, scores, -np.inf), kind="stable")
    ranks = np.full(scores.shape, np.inf)
    ranks[order] = np.arange(1, len(scores) + 1)
    return np.where(mask, ranks, np.inf)


def fuse(sig: dict[str, Any], qi: int, mask: Any, cfg: dict[str, float]) -> list[str]:
    """Weighted reciprocal-rank fusion over the four signals, each cut to its top-N candidates."""
    import numpy as np

    score = np.zeros(len(sig["codes"]))
    k = cfg["k"]
    n = cfg["n"]
    for name, weight in (
        ("cos_std", cfg["w_vs"]),
        ("cos_top_fill" if cfg["fill_v"] else "cos_top", cfg["w_vt"]),
        ("txt_std", cfg["w_ts"]),
        ("txt_top_fill" if cfg["fill_t"] else "txt_top", cfg["w_tt"]),
    ):
        if weight == 0:
            continue
        values = sig[name][qi]
        eligible = mask & (values > (0 if name.startswith("txt") else -1))
        ranks = rank_positions(values, eligible)
        ranks = np.where(ranks <= n, ranks, np.inf)
        score += weight / (k + ranks)
    score = np.where(sig["kinds"] == "outcome", score * cfg["outcome"], score)
    order = np.argsort(-score, kind="stable")[:10]
    return [sig["codes"][i] for i in order if score[i] > 0]


TEXT_ONLY_GRID: dict[str, list[float]] = {
    "k": [5, 10, 30],
    "n": [20, 50],
    "w_vs": [0.0],
    "w_vt": [0.0],
    "w_ts": [0.0, 0.25, 0.5, 1.0],
    "w_tt": [1.0],
    "outcome": [1.0],
    "fill_v": [0],
    "fill_t": [0, 1],
}


def tune(
    sig: dict[str, Any],
    queries: Sequence[Query],
    part: Sequence[int],
    grid: dict[str, list[float]] | None = None,
) -> list[tuple[dict[str, float], Any]]:
    import numpy as np

    code_class = dict(zip(sig["codes"], sig["classes"], strict=True))
    grid = grid or {
        "k": [5, 10, 30],
        "n": [20, 50],
        "w_vs": [0.5, 1.0],
        "w_vt": [1.0, 1.5, 2.0],
        "w_ts": [0.0, 0.25],
        "w_tt": [0.25, 0.5, 1.0],
        "outcome": [1.0],
        "fill_v": [0, 1],
        "fill_t": [0, 1],
    }
    results = []
    everything = np.ones(len(sig["codes"]), dtype=bool)
    class_masks = {c: sig["classes"] == c for c in set(sig["classes"].tolist())}
    for values in itertools.product(*grid.values()):
        cfg = dict(zip(grid, values, strict=True))
        row = []
        for with_class in (True, False):
            ranked = []
            for qi in part:
                first = sorted(queries[qi][2])[0]
                mask = class_masks[code_class[first]] if with_class else everything
                ranked.append(fuse(sig, qi, mask, cfg))
            row.append(metrics(ranked, [queries[qi] for qi in part]))
        results.append((cfg, row))
    return results


def _proc_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def old_search() -> Callable[..., Any]:
    """`search_standards` as it was before this ranking (commit 722cf14), for before/after costs."""
    import types

    source = subprocess.run(
        ["git", "show", "722cf14:api/curriculum/services.py"], capture_output=True, text=True, check=True
    ).stdout
    module = sys.modules["old_services"] = types.ModuleType("old_services")
    exec(compile(source, "old_services.py", "exec"), module.__dict__)  # noqa: S102 (our own history)
    return module.search_standards  # type: ignore[no-any-return]


async def costs(url: str, embedder: CachingEmbedder, rounds: int) -> None:
    """Per search: wall time, this process's CPU and the PostgreSQL backend's CPU (one pooled connection)."""
    import time

    engine = create_async_engine(Settings(DATABASE_URL=url).async_database_url, pool_size=1, max_overflow=0)
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    async with engine.connect() as connection:
        backend = int((await connection.execute(text("SELECT pg_backend_pid()"))).scalar_one())
    queries = [q for q, _, _ in TEACHER_QUERIES[:50]]
    vectors = await embedder.embed(queries)
    classes = [sorted(codes)[0] for _, _, codes in TEACHER_QUERIES[:50]]
    code_class = await class_of(sessions)
    before = old_search()
    print(
        f"\nCost per search ({rounds} x {len(queries)} queries, one connection, vectors cached); uptime load "
        f"{os.getloadavg()[0]:.2f}"
    )
    print(f"{'search':<44}{'wall ms':>9}{'API CPU ms':>12}{'PG CPU ms':>11}")
    for name, search, use_engine in (
        ("before (722cf14, ORM session)", before, False),
        ("now, ORM session", services.search_standards, False),
        ("now, engine (autocommit, the API's path)", services.search_standards, True),
    ):
        for with_class in (False, True):

            async def one(
                i: int,
                search: Callable[..., Any] = search,
                use_engine: bool = use_engine,
                with_class: bool = with_class,
            ) -> None:
                filters = services.StandardFilters(class_level=code_class[classes[i]] if with_class else None)
                if use_engine:
                    await search(engine, filters, queries[i], vectors[i], cursor=None, limit=10)
                else:
                    async with sessions() as session:
                        await search(session, filters, queries[i], vectors[i], cursor=None, limit=10)

            for i in range(len(queries)):  # warm: statement caches, plans
                await one(i)
            n = rounds * len(queries)
            wall, cpu, pg = time.perf_counter(), time.process_time(), _proc_cpu_seconds(backend)
            for _ in range(rounds):
                for i in range(len(queries)):
                    await one(i)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            pg = _proc_cpu_seconds(backend) - pg
            label = f"{name}, {'class filter' if with_class else 'no filter'}"
            print(f"{label:<44}{wall / n * 1000:>9.2f}{cpu / n * 1000:>12.2f}{pg / n * 1000:>11.2f}")
    await engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tune", action="store_true")
    parser.add_argument("--top", type=int, default=20)
    parser.add_argument("--skip-shipped", action="store_true", help="only the tuning grid")
    parser.add_argument("--text-only", action="store_true", help="tune the fallback without vectors")
    parser.add_argument("--cost", type=int, default=0, metavar="ROUNDS", help="time ROUNDS x 50 searches")
    parser.add_argument("--before", action="store_true", help="also score chapter vectors without topics")
    parser.add_argument("--cache", type=Path, default=Path("/tmp/setu-search-quality-embeddings.pkl"))  # noqa: S108
    args = parser.parse_args()
    with embedded_postgres_server() as url:
        upgrade_database(url)
        asyncio.run(run(url, args))


async def run(url: str, args: argparse.Namespace) -> None:
    embedder = CachingEmbedder(args.cache)
    if True:
        engine = create_async_engine(Settings(DATABASE_URL=url).async_database_url)
        sessions = async_sessionmaker(engine, expire_on_commit=False)
        report = await load_curriculum(sessions, embedder)
        print(f"loaded: {report}")
        if args.before:
            await use_title_only_vectors(sessions, embedder, title_only=True)
            rows = await evaluate(sessions, embedder, "title vectors, search_standards")
            print_table("Chapter vectors over title + keywords only (as before topics)", rows)
            await use_title_only_vectors(sessions, embedder, title_only=False)
        if not args.skip_shipped:
            rows = await evaluate(sessions, embedder, "shipped")
            print_table("Shipped ranking (search_standards)", rows)
        if args.tune:
            from tests.curriculum.test_search_quality import LABELLED_QUERIES

            queries = list(TEACHER_QUERIES) + list(LABELLED_QUERIES)
            sig = await signals(sessions, embedder, queries)
            tuning = [i for i in range(len(TEACHER_QUERIES)) if i % 5 != 4]
            held = [i for i in range(len(TEACHER_QUERIES)) if i % 5 == 4]
            legacy = list(range(len(TEACHER_QUERIES), len(queries)))
            results = [
                (cfg, row, legacy_recall(sig, queries, legacy, cfg))
                for cfg, row in tune(sig, queries, tuning, TEXT_ONLY_GRID if args.text_only else None)
            ]
            # R@3 with and without the class filter on the tuning split, and on the older title-style set
            # (outcomes among its answers) so that chapter topics do not bury the outcomes; then MRR
            results.sort(
                key=lambda r: (r[1][0][1] + r[1][1][1] + r[2], r[1][0][2] + r[1][1][2]), reverse=True
            )
            print(
                "\nTop weightings on the tuning split (by R@3 class + none + old set, then MRR); held-out and"
            )
            print("the older title-style set (LABELLED_QUERIES, its own filters) shown; held-out never used")
            print(
                f"{'k':>4}{'n':>4}{'w_vs':>6}{'w_vt':>6}{'w_ts':>6}{'w_tt':>6}{'fv':>3}{'ft':>3} |"
                f"{'R@3 cls':>8}{'R@3 none':>9}{'MRR cls':>8}{'MRR none':>9} | held R@3 cls/none | old R@3"
            )
            for cfg, row, _ in results[: args.top]:
                print(describe(cfg, row, sig, queries, held, legacy))
            for label, cfg in BASELINES.items():
                print(f"-- {label}")
                print(describe(cfg, tune_one(sig, queries, tuning, cfg), sig, queries, held, legacy))
        await engine.dispose()
        if args.cost:
            await costs(url, embedder, args.cost)


def _cfg(
    k: float, n: float, vs: float, vt: float, ts: float, tt: float, fv: int, ft: int
) -> dict[str, float]:
    return {
        "k": k,
        "n": n,
        "w_vs": vs,
        "w_vt": vt,
        "w_ts": ts,
        "w_tt": tt,
        "outcome": 1.0,
        "fill_v": fv,
        "fill_t": ft,
    }


BASELINES = {
    "today's fusion, new chapter vectors (RRF 60, 100 each)": _cfg(60, 100, 1, 0, 1, 0, 0, 0),
    "chapter vector only": _cfg(60, 100, 1, 0, 0, 0, 0, 0),
    "best topic vector only (outcomes as own topic)": _cfg(60, 100, 0, 1, 0, 0, 1, 0),
    "text only (serving down): topics + own text": _cfg(10, 20, 0, 0, 1, 1, 0, 0),
    "text only (serving down): topics, own text if none": _cfg(10, 20, 0, 0, 0, 1, 0, 1),
    "text only (serving down): both": _cfg(10, 20, 0, 0, 1, 1, 0, 1),
}


def describe(
    cfg: dict[str, float], row: Any, sig: dict[str, Any], queries: Sequence[Query], held: Any, legacy: Any
) -> str:
    held_row = tune_one(sig, queries, held, cfg)
    old = legacy_recall(sig, queries, legacy, cfg)
    return (
        f"{cfg['k']:>4.0f}{cfg['n']:>4.0f}{cfg['w_vs']:>6}{cfg['w_vt']:>6}{cfg['w_ts']:>6}{cfg['w_tt']:>6}"
        f"{cfg['fill_v']:>3.0f}{cfg['fill_t']:>3.0f} |"
        f"{row[0][1]:>8.3f}{row[1][1]:>9.3f}{row[0][2]:>8.3f}{row[1][2]:>9.3f} |"
        f"   {held_row[0][1]:.3f} / {held_row[1][1]:.3f}   | {old:.3f}"
    )


def legacy_recall(sig: dict[str, Any], queries: Sequence[Query], part: Any, cfg: dict[str, float]) -> float:
    import numpy as np

    everything = np.ones(len(sig["codes"]), dtype=bool)
    ranked = [
        fuse(sig, qi, (sig["classes"] == queries[qi][1]) if queries[qi][1] else everything, cfg)
        for qi in part
    ]
    return metrics(ranked, [queries[qi] for qi in part])[1]


def tune_one(
    sig: dict[str, Any], queries: Sequence[Query], part: Sequence[int], cfg: dict[str, float]
) -> Any:
    import numpy as np

    code_class = dict(zip(sig["codes"], sig["classes"], strict=True))
    everything = np.ones(len(sig["codes"]), dtype=bool)
    row = []
    for with_class in (True, False):
        ranked = []
        for qi in part:
            first = sorted(queries[qi][2])[0]
            mask = (sig["classes"] == code_class[first]) if with_class else everything
            ranked.append(fuse(sig, qi, mask, cfg))
        row.append(metrics(ranked, [queries[qi] for qi in part]))
    return row


if __name__ == "__main__":
    main()
