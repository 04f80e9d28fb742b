"""Read files of a manual download either from a folder or straight from its tar archive.

Gzipped tars only read well front to back, so an archive is streamed once per
pass and the caller says which files it wants; nested tars (ILSVRC's per-synset
tars) are opened in the same stream.
"""

from __future__ import annotations

import os
import tarfile
from typing import IO, Iterator

_TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz")


def iter_tar(source: str | os.PathLike | IO[bytes], *, nested: bool = False) -> Iterator[tuple[str, bytes]]:
  """Yield (member name without a leading ``./``, bytes) of every regular file, in archive order.

  With ``nested=True`` a member that is itself a tar is opened and its files are
  yielded as ``<member name without suffix>/<inner name>``.
  """
  if isinstance(source, (str, os.PathLike)):
    tar = tarfile.open(os.fspath(source), mode="r|*")
  else:
    tar = tarfile.open(fileobj=source, mode="r|*")
  with tar:
    for member in tar:
      if not member.isfile():
        continue
      name = member.name[2:] if member.name.startswith("./") else member.name
      f = tar.extractfile(member)
      if f is None:
        continue
      if nested and name.endswith(_TAR_SUFFIXES):
        stem = name
        for suffix in _TAR_SUFFIXES:
          if stem.endswith(suffix):
            stem = stem[: -len(suffix)]
            break
        for inner, data in iter_tar(f, nested=True):
          yield f"{stem}/{inner}", data
      else:
        yield name, f.read()


class Source:
  """Files under a folder, or under ``prefix`` inside a tar archive, addressed by relative path."""

  def __init__(self, path: str | os.PathLike, prefix: str = ""):
    self.path = os.fspath(path)
    self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
    self.is_dir = os.path.isdir(self.path)

  def __repr__(self) -> str:
    return f"Source({self.path!r}{', prefix=' + repr(self.prefix) if self.prefix else ''})"

  @classmethod
  def find(cls, root: str | os.PathLike, folder: str | None, archive: str | None, prefix: str = "") -> "Source | None":
    """``root/folder`` if it is a folder, else ``root/archive`` (files under ``prefix``) if it exists, else None."""
    if folder and os.path.isdir(os.path.join(root, folder)):
      return cls(os.path.join(root, folder))
    if archive and os.path.isfile(os.path.join(root, archive)):
      return cls(os.path.join(root, archive), prefix)
    return None

  def _rel(self, name: str) -> str | None:
    if not name.startswith(self.prefix):
      return None
    return name[len(self.prefix):]

  def iter_files(self, wanted: set[str] | None = None, *, suffixes: tuple[str, ...] = (),
                 nested: bool = False) -> Iterator[tuple[str, bytes]]:
    """Yield (relative path, bytes) of the wanted files (or all with one of ``suffixes``) that exist.

    A folder yields in sorted order; an archive in archive order.
    """
    if self.is_dir:
      if wanted is not None:
        for rel in sorted(wanted):
          full = os.path.join(self.path, rel)
          if os.path.isfile(full):
            with open(full, "rb") as f:
              yield rel, f.read()
        return
      for dirpath, dirnames, filenames in os.walk(self.path):
        dirnames.sort()
        for fn in sorted(filenames):
          if not suffixes or fn.endswith(suffixes):
            full = os.path.join(dirpath, fn)
            with open(full, "rb") as f:
              yield os.path.relpath(full, self.path).replace(os.sep, "/"), f.read()
      return
    for name, data in iter_tar(self.path, nested=nested):
      rel = self._rel(name)
      if rel is None:
        continue
      if wanted is not None:
        if rel in wanted:
          yield rel, data
      elif not suffixes or rel.endswith(suffixes):
        yield rel, data

  def read_small(self, names: list[str]) -> dict[str, bytes]:
    """The bytes of a few (small) files by relative path, in one pass; missing ones are left out."""
    if self.is_dir:
      return {rel: data for rel, data in self.iter_files(set(names))}
    out: dict[str, bytes] = {}
    wanted = set(names)
    for rel, data in self.iter_files(wanted):
      out[rel] = data
      if len(out) == len(wanted):
        break
    return out
