"""Describe the Python distributions bundled in the package's private venv.

Run with the staged venv's interpreter by packaging/build-deb.sh:

    VENV/bin/python bundled_dists.py copyright YEAR  > usr/share/doc/aisentinel/copyright
    VENV/bin/python bundled_dists.py list            > .../bundled-python-packages.txt
    VENV/bin/python bundled_dists.py refresh-records

``copyright`` writes a machine-readable (DEP-5) copyright file: aisentinel itself under
Apache-2.0, then one paragraph per bundled distribution with the license its metadata
declares and where its license files lie in the venv.
"""

from __future__ import annotations

import base64
import hashlib
import sys
from importlib import metadata
from pathlib import Path

SITE = "opt/aisentinel/venv/lib/python{}.{}/site-packages".format(*sys.version_info[:2])

HEADER = """\
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: aisentinel
Comment: The Python distributions aisentinel needs are bundled in a private virtual
 environment under /opt/aisentinel/venv; each has its own paragraph below, with the
 license its metadata declares. Their full license texts are in the venv, in each
 distribution's .dist-info directory.

Files: *
Copyright: {year} The aisentinel developers
License: Apache-2.0
"""

APACHE = """\
License: Apache-2.0
 Licensed under the Apache License, Version 2.0 (the "License"); you may not use
 this file except in compliance with the License.
 .
 On Debian systems, the full text of the Apache License, Version 2.0 can be found
 in the file /usr/share/common-licenses/Apache-2.0.
"""


def _dists() -> list[metadata.Distribution]:
    """Bundled distributions other than aisentinel, sorted by name."""
    found = {
        d.metadata["Name"].lower(): d
        for d in metadata.distributions()
        if d.metadata["Name"] and d.metadata["Name"].lower() != "aisentinel"
    }
    return [found[name] for name in sorted(found)]


def _first(meta: metadata.PackageMetadata, key: str) -> str:
    """The first value of header ``key``, or an empty string."""
    values = meta.get_all(key) or []
    return str(values[0]) if values else ""


def _license(dist: metadata.Distribution) -> str:
    """The short license name from License-Expression, classifiers or License."""
    meta = dist.metadata
    expression = _first(meta, "License-Expression")
    if expression:
        return str(expression).strip()
    classifiers = [
        c.rsplit("::", 1)[-1].strip()
        for c in meta.get_all("Classifier") or []
        if c.startswith("License ::") and c.count("::") >= 2
    ]
    if classifiers:
        return " or ".join(classifiers)
    text = _first(meta, "License").strip()
    if text and "\n" not in text and len(text) < 60:
        return text
    return "see-license-file"


def _license_files(dist: metadata.Distribution) -> list[str]:
    """License files of ``dist`` relative to the package root."""
    out = []
    for file in dist.files or []:
        name = Path(str(file))
        if ".dist-info" in name.parts[0] and (
            "licen" in str(name).lower() or "copying" in str(name).lower()
        ):
            out.append(f"/{SITE}/{name}")
    return sorted(out)


def copyright_file(year: str) -> str:
    """The whole DEP-5 copyright file."""
    parts = [HEADER.format(year=year)]
    for dist in _dists():
        name = dist.metadata["Name"]
        files = _license_files(dist)
        where = ", ".join(files) if files else "its .dist-info directory"
        parts.append(
            f"Files: {SITE}/{name.lower().replace('-', '_')}*\n"
            f"Copyright: The {name} authors\n"
            f"License: {_license(dist)}\n"
            f" {name} {dist.version}, bundled from PyPI; license text in {where}.\n"
        )
    parts.append(APACHE)
    return "\n".join(parts)


def refresh_records() -> int:
    """Rewrite hash and size in every RECORD for files changed after install.

    The build rewrites shebangs after pip recorded them; a stale hash would differ from
    build to build (it hashes the random staging path) and fail `pip` verification.
    Returns the number of entries changed.
    """
    changed = 0
    for dist in metadata.distributions():
        record = next((f for f in dist.files or [] if f.name == "RECORD"), None)
        if record is None:
            continue
        path = Path(str(dist.locate_file(record)))
        out = []
        for line in path.read_text().splitlines():
            name, _, rest = line.partition(",")
            target = Path(str(dist.locate_file(name)))
            fresh = line
            if rest.partition(",")[0] and target.is_file() and not target.is_symlink():
                data = target.read_bytes()
                raw = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
                fresh = f"{name},sha256={raw.decode()},{len(data)}"
            changed += fresh != line
            out.append(fresh)
        path.write_text("\n".join(out) + "\n")
    return changed


def main(argv: list[str]) -> int:
    """Entry point; see the module docstring."""
    if argv[:1] == ["copyright"] and len(argv) == 2:
        sys.stdout.write(copyright_file(argv[1]))
        return 0
    if argv == ["refresh-records"]:
        refresh_records()
        return 0
    if argv == ["list"]:
        sys.stdout.writelines(f"{d.metadata['Name']}=={d.version}\n" for d in _dists())
        return 0
    sys.stderr.write("usage: bundled_dists.py copyright YEAR | list | refresh-records\n")
    return 2


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
