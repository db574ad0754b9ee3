"""Stage ``source``: a digest of the local files a dataset's source reads, so DVC re-runs extract
when they change.

DVC re-runs a stage when a declared dependency changes, but a user's own data lives wherever
``data.sources.<name>.path`` (or a local Hugging Face ``id``) points, outside the paths ``dvc.yaml``
can name per dataset. This stage (``always_changed`` in ``dvc.yaml``, so it runs on every
``dvc repro``) writes ``artifacts/sources/<dataset>.json``, which ``extract@<dataset>`` depends on:
when the digest is the same the file is byte-identical and DVC skips extract; when the data changed,
extract and everything after it run again.

What is digested (each source module's optional ``inputs`` hook names the paths):

* a file (``kind: embeddings``): SHA-256 of its content;
* a folder (``kind: imagefolder``, a local Hugging Face folder): SHA-256 of its listing, one line
  per file with its relative path, size and modification time, and for a symbolic link to a file
  its target(s) as written in the link (content hashing of a large image folder on every repro
  would cost minutes; a file rewritten with the same size and time stamp is not seen, but a link
  re-pointed at another file is, e.g. in a DVC or git-annex store). The listing is the
  imagefolder source's own walk (:func:`pipeline.data.walk_files`): symbolic links to folders
  are followed, so a linked class folder's images are digested, and a broken link is recorded
  with its target (extract refuses one to an image). Hidden files and folders (names starting
  with ``.``: ``.DS_Store``, ``.ipynb_checkpoints/``) are left out, as the imagefolder source,
  ``datasets``' folder builders and ``load_from_disk`` leave them out: macOS Finder rewrites
  ``.DS_Store`` when a folder is merely viewed, which re-ran extract on unchanged images;
* nothing for MedMNIST (the official file is fixed by its MD5, checked by extract on every use) and
  for a Hugging Face hub id (pinned by `id` and `revision` in params; its local cache is not
  digested);
* for an image source, a local model folder named by ``backbone.name`` (listing, as a folder
  above; a hub id is pinned by ``backbone.revision`` in extract's params), so a model re-downloaded
  in place re-runs extract.

A path that does not exist is recorded as missing; extract then stops with the clear error. No
MLflow run: the stage is bookkeeping that runs on every repro.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import Any

from pipeline import sources
from pipeline.artifacts import check_writable, file_sha256, write_json
from pipeline.common import base_parser, load, run_main
from pipeline.data import walk_files

log = logging.getLogger(__name__)


def _link_targets(path: Path) -> list[str]:
    """The targets of the chain of symbolic links that starts at ``path`` (``[]`` for a file that
    is no link), as written in each link."""
    targets: list[str] = []
    while path.is_symlink() and len(targets) < 40:  # 40: the kernel's limit (ELOOP)
        target = os.readlink(path)
        targets.append(target)
        path = path.parent / target
    return targets


def digest_path(path: Path) -> dict[str, Any]:
    """``{"path", "type": file | folder | missing, ...}``: a file's content hash and size, or a
    folder's listing hash (relative path, size, mtime_ns of every file, and the link targets of a
    symbolic link to a file, sorted; symbolic links to folders followed; hidden files and folders
    left out, as every reader of a folder leaves them out), file count and total size, and
    ``broken_links`` (only when there are any: each one is listed with its target)."""
    out: dict[str, Any] = {"path": str(path)}
    if path.is_file():
        return {**out, "type": "file", "bytes": path.stat().st_size, "sha256": file_sha256(path)}
    if path.is_dir():
        h = hashlib.sha256()
        files = total = broken = 0
        for f in walk_files(path, skip_hidden=True):
            rel = f.relative_to(path).as_posix()
            if not f.exists():  # a broken link: its target, so that fixing it changes the digest
                h.update(f"{rel}\0broken link\0{os.readlink(f)}\n".encode())
                broken += 1
                continue
            st = f.stat()
            # a symbolic link's targets too: a link re-pointed at another image of the same size
            # and time stamp (a DVC or git-annex store, whose target names hold the content hash)
            links = "".join(f"\0{target}" for target in _link_targets(f))
            h.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}{links}\n".encode())
            files, total = files + 1, total + st.st_size
        return {
            **out,
            "type": "folder",
            "files": files,
            "bytes": total,
            **({"broken_links": broken} if broken else {}),
            "listing_sha256": h.hexdigest(),
        }
    return {**out, "type": "missing"}


def local_backbone(kind: str, params: Any) -> Path | None:
    """The local model folder ``backbone.name`` names, when the source yields images (the only
    ones extract runs through the backbone) and the folder exists; else None (a hub id is pinned
    by ``backbone.revision``, which extract's params already hold)."""
    if not sources.yields_images(kind):
        return None
    local = Path(params.backbone.name).expanduser()
    return local if local.is_dir() else None


def source_stamp(dataset: str, params: Any) -> dict[str, Any]:
    """The stage's JSON: the dataset, its source kind, the digest of every local input and, for an
    image source read through a local model folder, that folder's digest (``backbone``): a model
    re-downloaded in place re-runs extract."""
    source = params.data.source(dataset)
    paths = sources.inputs(dataset, source, params.data)
    model = local_backbone(source.kind, params)
    return {
        "dataset": dataset,
        "kind": source.kind,
        "inputs": [digest_path(Path(p)) for p in paths],
        **({"backbone": digest_path(model)} if model is not None else {}),
    }


def main(argv: list[str] | None = None) -> int:
    return run_main(_main, argv)


def _main(argv: list[str] | None) -> None:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--dataset", required=True, help="a name in data.datasets")
    parser.add_argument("--out", required=True, type=Path, help="the JSON digest to write")
    args = parser.parse_args(argv)
    params = load(args)
    check_writable(args.out)
    stamp = source_stamp(args.dataset, params)
    for item in stamp["inputs"]:
        if item["type"] == "missing":
            log.warning(
                "%s: %s does not exist (extract will say what to do)", args.dataset, item["path"]
            )
        if item.get("broken_links"):
            log.warning(
                "%s: %s holds %d broken symbolic link(s) (recorded; extract refuses one to an "
                "image, naming it)",
                args.dataset,
                item["path"],
                item["broken_links"],
            )
    write_json(args.out, stamp)
    missing = sum(item["type"] == "missing" for item in stamp["inputs"])
    log.info(
        "%s: %d local input(s) digested%s -> %s",
        args.dataset,
        len(stamp["inputs"]) - missing,
        f", {missing} missing (recorded as missing)" if missing else "",
        args.out,
    )


if __name__ == "__main__":
    raise SystemExit(main())
