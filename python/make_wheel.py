#!/usr/bin/env python3
"""Packs a staged `mooncake` package directory into a wheel.

    make_wheel.py STAGE OUTDIR --name NAME --version VERSION [--requires-extra EXTRA:REQ ...]

STAGE holds the package (STAGE/mooncake/...: the engine extension module,
the shared libraries it loads, Python files); scripts/mooncake.sh --python
stages it and sets the libraries' RPATHs. The wheel is tagged for the Python
that runs this script (the one the engine module was built for) and this
platform; it is not a manylinux wheel: the system libraries Mooncake links
(glog, gflags, jsoncpp, ...) come from the machine it is installed on.

Only the standard library is used: a wheel is a zip file with a
NAME-VERSION.dist-info directory (METADATA, WHEEL, RECORD).
"""

import argparse
import base64
import hashlib
import os
import re
import sys
import sysconfig
import zipfile


def tags():
    impl = f"cp{sys.version_info.major}{sys.version_info.minor}"
    plat = re.sub(r"[-.]", "_", sysconfig.get_platform())
    return impl, impl, plat


def digest(data):
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("stage")
    ap.add_argument("outdir")
    ap.add_argument("--name", required=True)
    ap.add_argument("--version", required=True)
    ap.add_argument("--summary", default="Mooncake's transfer engine (Python module)")
    ap.add_argument("--requires-extra", action="append", default=[],
                    help="EXTRA:REQUIREMENT, e.g. http:aiohttp")
    args = ap.parse_args()

    dist = re.sub(r"[-_.]+", "_", args.name)
    impl, abi, plat = tags()
    tag = f"{impl}-{abi}-{plat}"
    info = f"{dist}-{args.version}.dist-info"
    os.makedirs(args.outdir, exist_ok=True)
    path = os.path.join(args.outdir, f"{dist}-{args.version}-{tag}.whl")

    extras = {}
    for spec in args.requires_extra:
        extra, req = spec.split(":", 1)
        extras.setdefault(extra, []).append(req)
    metadata = [
        "Metadata-Version: 2.1",
        f"Name: {args.name}",
        f"Version: {args.version}",
        f"Summary: {args.summary}",
        "Requires-Python: >=3.8",
    ]
    for extra, reqs in sorted(extras.items()):
        metadata.append(f"Provides-Extra: {extra}")
        metadata += [f'Requires-Dist: {r}; extra == "{extra}"' for r in reqs]
    wheel = ["Wheel-Version: 1.0", "Generator: mooncake-flagcx make_wheel.py",
             "Root-Is-Purelib: false", f"Tag: {tag}"]

    files = []
    for top, dirs, names in os.walk(args.stage):
        dirs.sort()
        for n in sorted(names):
            full = os.path.join(top, n)
            if os.path.islink(full) or "__pycache__" in full:
                continue
            files.append((os.path.relpath(full, args.stage), full))

    record = []
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for arc, full in files:
            with open(full, "rb") as f:
                data = f.read()
            zi = zipfile.ZipInfo(arc, date_time=(2020, 1, 1, 0, 0, 0))
            zi.external_attr = (os.stat(full).st_mode & 0o777 | 0o100000) << 16
            zi.compress_type = zipfile.ZIP_DEFLATED
            z.writestr(zi, data)
            record.append(f"{arc},{digest(data)},{len(data)}")
        for name, lines in (("METADATA", metadata), ("WHEEL", wheel)):
            data = ("\n".join(lines) + "\n").encode()
            z.writestr(f"{info}/{name}", data)
            record.append(f"{info}/{name},{digest(data)},{len(data)}")
        record.append(f"{info}/RECORD,,")
        z.writestr(f"{info}/RECORD", "\n".join(record) + "\n")
    print(path)


if __name__ == "__main__":
    main()
