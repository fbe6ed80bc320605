#!/usr/bin/env python3
"""Modify ~1% of files in ./tree deterministically (seed 7)."""
import os, random, shutil
random.seed(7)
files = sorted(os.path.join(d, f) for d, _, fs in os.walk("tree") for f in fs
               if not os.path.islink(os.path.join(d, f)))
random.shuffle(files)
n = len(files)
appended, edited, deleted, added = files[:250], files[250:280], files[280:330], files[330:380]
for p in appended:
    with open(p, "ab") as f:
        f.write(b"\n# cairn-test: appended line, night 2\n")
for p in edited:  # overwrite 16 bytes in the middle of the file
    sz = os.path.getsize(p)
    if sz < 64: continue
    with open(p, "r+b") as f:
        f.seek(sz // 2); f.write(b"EDITED-NIGHT-2!!")
for p in deleted:
    os.remove(p)
for i, src in enumerate(added):  # new files: copy of an existing file + header, in a sibling name
    if not os.path.exists(src): continue
    dst = src + f".new{i}"
    with open(src, "rb") as s, open(dst, "wb") as d:
        d.write(f"new file {i} added on night 2\n".encode()); d.write(s.read())
print(f"files={n} appended={len(appended)} edited={len(edited)} deleted={len(deleted)} added={len(added)}")
