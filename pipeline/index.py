"""Command ``hashaudit index``: load a head's released codes into an index and answer the test queries.

The database is the released train codes (``codes.safetensors`` of a train stage output), the
queries its test codes. The back-end comes from ``retrieval.backend`` (``exact``: the compiled
scan; ``faiss`` exact through ``IndexBinaryFlat``;
``ivf`` (IVF lists scanned by the compiled kernels), ``faiss_ivf`` or ``faiss_hnsw`` approximate,
settings from ``retrieval.ivf_*`` / ``hnsw_*``; ``milvus``:
Milvus Lite in the file ``retrieval.milvus_uri`` or a Milvus server at an ``http://`` URI),
overridable with ``--backend`` / ``--uri``. Writes a JSON summary:
load and search time, queries per second, and tie-aware recall@k against exact search.

    hashaudit index --head artifacts/heads/breastmnist/dpsh-48 --k 10 --out metrics/index/dpsh-48.json
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from pipeline.artifacts import load_head_codes, write_json
from pipeline.common import base_parser, load, run_main
from pipeline.config import Params, ParamsError
from retrieval.backends import BACKENDS, build_index, recall_at
from retrieval.search import HammingIndex

log = logging.getLogger(__name__)


def run_index(
    params: Params,
    *,
    head_dir: Path,
    k: int,
    out: Path,
    backend: str | None = None,
    uri: str | None = None,
) -> dict[str, Any]:
    r = params.retrieval
    name = backend or r.backend
    if uri is not None and name != "milvus":
        raise ParamsError(
            f"--uri {uri!r}: only the milvus back-end reads a URI, and this run uses {name!r} "
            "(--backend, else retrieval.backend); drop --uri, or pass --backend milvus"
        )
    codes, n_bits, _ = load_head_codes(head_dir)
    n_db = len(codes["train"])
    if len(codes["test"]) == 0:
        raise ParamsError(
            f"{head_dir / 'codes.safetensors'}: holds no test codes to query with; re-run the "
            "train stage on embeddings with a non-empty test split"
        )
    if not 1 <= k <= n_db:
        raise ParamsError(
            f"--k {k}: must be between 1 and the {n_db} database codes of {head_dir}; "
            "choose a k in that range"
        )
    options: dict[str, Any] = {}
    if name == "milvus":
        options = {"uri": uri or r.milvus_uri, "index_type": r.milvus_index}
        if r.milvus_index == "BIN_IVF_FLAT":  # the IVF settings the other back-ends read
            options.update(
                nprobe=r.ivf_nprobe, **({} if r.ivf_nlist is None else {"nlist": r.ivf_nlist})
            )
        if "://" not in options["uri"]:
            Path(options["uri"]).parent.mkdir(parents=True, exist_ok=True)
    elif name in ("ivf", "faiss_ivf"):
        options = {"nlist": r.ivf_nlist, "nprobe": r.ivf_nprobe}
    elif name == "faiss_hnsw":
        options = {
            "m": r.hnsw_m,
            "ef_construction": r.hnsw_ef_construction,
            "ef_search": r.hnsw_ef_search,
        }
    t0 = time.perf_counter()
    index = build_index(name, codes["train"], n_bits, **options)
    t_load = time.perf_counter() - t0
    try:
        t0 = time.perf_counter()
        dist, ids = index.search(codes["test"], k)
        t_search = time.perf_counter() - t0
    finally:  # a Milvus Lite file or server connection is released even when the search fails
        if hasattr(index, "close"):
            index.close()
    exact, _ = HammingIndex(codes["train"], n_bits).search(codes["test"], k)
    summary = {
        "backend": name,
        "uri": options.get("uri", ""),
        "n_bits": n_bits,
        "n_database": len(codes["train"]),
        "n_queries": len(codes["test"]),
        "k": k,
        "load_seconds": t_load,
        "search_seconds": t_search,
        "queries_per_second": len(codes["test"]) / max(t_search, 1e-9),
        f"recall_at_{k}": recall_at(exact, dist, ids),
    }
    write_json(out, summary)
    log.info(
        "%s: %d queries in %.3f s, recall@%d %.4f",
        name,
        summary["n_queries"],
        t_search,
        k,
        summary[f"recall_at_{k}"],
    )
    return summary


def _body(argv: list[str] | None) -> None:
    parser = base_parser(
        "Load released codes into an index (faiss / Milvus) and answer the test queries."
    )
    parser.add_argument("--head", type=Path, required=True, help="a train stage output directory")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--out", type=Path, required=True, help="summary JSON")
    parser.add_argument("--backend", choices=tuple(BACKENDS), default=None)
    parser.add_argument(
        "--uri", default=None, help="Milvus URI: a file (Milvus Lite) or http://host:19530"
    )
    args = parser.parse_args(argv)
    run_index(
        load(args), head_dir=args.head, k=args.k, out=args.out, backend=args.backend, uri=args.uri
    )


def main(argv: list[str] | None = None) -> int:
    return run_main(_body, argv)


if __name__ == "__main__":
    raise SystemExit(main())
