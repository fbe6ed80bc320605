#!/usr/bin/env python3
"""Inputs for scripts/corpora.sh, built from text already on the machine
(no random bytes: random bytes do not compress and tell nothing about a
codec). Deterministic: the same machine gives the same bytes.

  corpora_gen.py pg OUTDIR [MB]    COPY files for the SQL dump's tables
  corpora_gen.py redis [MB]        Redis protocol on stdout (redis-cli --pipe)
  corpora_gen.py retar IN OUT      a mildly changed copy of tarball IN
"""
import gzip
import io
import json
import os
import random
import sys
import tarfile

DOC_ROOTS = ["/usr/share/doc"]
MAN_ROOT = "/usr/share/man"


def read_text(path, limit=1 << 20):
    """The file's text (gunzipped for .gz), or None if it is not text."""
    try:
        with open(path, "rb") as f:
            raw = f.read(limit)
        if path.endswith(".gz"):
            raw = gzip.decompress(raw)[:limit]
        if b"\0" in raw[:4096]:
            return None
        return raw.decode("utf-8")
    except (OSError, EOFError, UnicodeDecodeError, gzip.BadGzipFile):
        return None


def walk(root):
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            p = os.path.join(dirpath, name)
            if os.path.isfile(p) and not os.path.islink(p):
                yield p


def copy_field(value):
    """A value in PostgreSQL's COPY text format."""
    if value is None:
        return "\\N"
    return (str(value).replace("\\", "\\\\").replace("\t", "\\t")
            .replace("\n", "\\n").replace("\r", "\\r"))


def write_row(f, *values):
    f.write("\t".join(copy_field(v) for v in values) + "\n")


def texts(budget):
    """(path, text) of documentation and man pages, up to `budget` bytes."""
    mans = [os.path.join(MAN_ROOT, f"man{s}") for s in range(1, 9)]
    # Six tenths documentation, four tenths man pages.
    for roots, share in ((DOC_ROOTS, budget * 6 // 10), (mans, budget * 4 // 10)):
        used = 0
        for root in roots:
            for p in walk(root):
                t = read_text(p)
                if not t:
                    continue
                yield p, t
                used += len(t)
                if used >= share:
                    break
            if used >= share:
                break


def vocabulary(docs):
    words, names = set(), set()
    for _, t in docs:
        for w in t.split():
            w = w.strip(".,;:()[]{}\"'`<>")
            if w.isalpha() and 3 <= len(w) <= 12:
                (names if w[0].isupper() and w[1:].islower() else words).add(w.lower())
    return sorted(words), sorted(names)


def pg(outdir, mb):
    rng = random.Random(21)
    budget = mb * 1_000_000
    docs = list(texts(budget * 45 // 100))
    words, names = vocabulary(docs)
    lines = [l.strip() for _, t in docs for l in t.splitlines() if len(l.strip()) > 30]
    os.makedirs(outdir, exist_ok=True)
    with open(os.path.join(outdir, "documents.copy"), "w") as f:
        for i, (p, t) in enumerate(docs, 1):
            kind = "man" if p.startswith(MAN_ROOT) else "doc"
            package = p.split("/")[4] if kind == "doc" else p.split("/")[-1].split(".")[0]
            write_row(f, i, kind, package, p, len(t), t)
    n_users = 40_000
    with open(os.path.join(outdir, "users.copy"), "w") as f:
        for i in range(1, n_users + 1):
            first, last = rng.choice(names).title(), rng.choice(names).title()
            login = f"{first[0].lower()}{last.lower()}{i}"
            prefs = {"lang": rng.choice(["en", "de", "fr", "es", "pt"]),
                     "theme": rng.choice(["light", "dark"]),
                     "newsletter": rng.random() < 0.3,
                     "interests": rng.sample(words, 3)}
            bio = " ".join(rng.choice(lines) for _ in range(rng.randint(0, 2)))
            write_row(f, i, login, f"{first} {last}", f"{login}@{rng.choice(words)}.example.org",
                      f"2024-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d} "
                      f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:00+00",
                      bio, json.dumps(prefs))
    used = sum(len(t) for _, t in docs) + n_users * 250
    kinds = ["comment", "view", "search", "edit", "login", "share"]
    agents = ["Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0",
              "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) Safari/605.1.15",
              "curl/8.5.0", "okhttp/4.12.0"]
    with open(os.path.join(outdir, "events.copy"), "w") as f:
        i = 0
        while used < budget:
            i += 1
            doc_id = rng.randint(1, len(docs))
            kind = rng.choice(kinds)
            ev = {"type": kind, "document": doc_id, "path": docs[doc_id - 1][0],
                  "client": {"ip": f"10.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}",
                             "agent": rng.choice(agents)},
                  "session": f"{rng.getrandbits(64):016x}"}
            if kind in ("comment", "edit"):
                ev["text"] = rng.choice(lines)
            if kind == "search":
                ev["query"] = " ".join(rng.sample(words, rng.randint(1, 3)))
            payload = json.dumps(ev)
            write_row(f, i, rng.randint(1, n_users),
                      f"2025-{1 + i * 12 // 400_000 % 12:02d}-{rng.randint(1, 28):02d} "
                      f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}+00",
                      kind, payload)
            used += len(payload) + 40


def resp(*args):
    out = [f"*{len(args)}\r\n".encode()]
    for a in args:
        b = a if isinstance(a, bytes) else str(a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(b), b))
    return b"".join(out)


def redis(mb):
    """A web application's Redis: user hashes, JSON sessions, per-user event
    lists, a leaderboard, cached rendered pages and tag sets."""
    rng = random.Random(22)
    budget = mb * 1_000_000
    docs = list(texts(budget // 3))
    words, names = vocabulary(docs)
    lines = [l.strip() for _, t in docs for l in t.splitlines() if len(l.strip()) > 30]
    w = sys.stdout.buffer
    used = 0
    n_users = 30_000
    for i in range(1, n_users + 1):
        first, last = rng.choice(names).title(), rng.choice(names).title()
        w.write(resp("HSET", f"user:{i}", "name", f"{first} {last}",
                     "email", f"{first.lower()}.{last.lower()}@example.org",
                     "created", 1_700_000_000 + i * 97, "plan", rng.choice(["free", "pro", "team"]),
                     "bio", rng.choice(lines)))
        w.write(resp("ZADD", "leaderboard", rng.randint(0, 1_000_000), f"user:{i}"))
        used += 250
    for i in range(60_000):
        sess = {"user": rng.randint(1, n_users), "csrf": f"{rng.getrandbits(128):032x}",
                "cart": [{"sku": f"SKU-{rng.randint(0, 99999):05d}", "qty": rng.randint(1, 3)}
                         for _ in range(rng.randint(0, 3))],
                "last_page": rng.choice(docs)[0], "locale": rng.choice(["en_US", "de_DE", "fr_FR"])}
        s = json.dumps(sess)
        w.write(resp("SET", f"session:{rng.getrandbits(96):024x}", s, "EX", 86400 * 7))
        used += len(s) + 40
    for n, (p, t) in enumerate(docs):
        page = f"<html><head><title>{p}</title></head><body><pre>{t[:20000]}</pre></body></html>"
        w.write(resp("SET", f"cache:page:{p}", page))
        used += len(page)
        if used > budget * 2 // 3:
            break
    for word in words[:3000]:
        w.write(resp("SADD", f"tag:{word}", *[f"user:{rng.randint(1, n_users)}" for _ in range(20)]))
        used += 200
    i = 0
    while used < budget:
        i += 1
        ev = {"t": 1_760_000_000 + i * 3, "type": rng.choice(["view", "comment", "like"]),
              "doc": rng.randint(1, len(docs)), "text": rng.choice(lines)}
        s = json.dumps(ev)
        w.write(resp("RPUSH", f"events:user:{rng.randint(1, n_users)}", s))
        used += len(s) + 30


def retar(src, dst):
    """Tomorrow's tarball of the same directories: ~1% of the regular files
    changed (a text file gets a line, any other file new bytes at its end),
    0.5% gone, a few new ones, and new mtimes on the changed ones."""
    rng = random.Random(23)
    with tarfile.open(src) as tin, tarfile.open(dst, "w", format=tarfile.GNU_FORMAT) as tout:
        for m in tin:
            if not m.isfile():
                tout.addfile(m)
                continue
            data = tin.extractfile(m).read()
            r = rng.random()
            if r < 0.005:
                continue
            if r < 0.015:
                data += b"\nchanged on night 2\n" if not data.startswith(b"\x1f\x8b") else bytes(
                    rng.getrandbits(8) for _ in range(64))
                m.size = len(data)
                m.mtime += 86400
            tout.addfile(m, io.BytesIO(data))
            if r > 0.998:
                extra = tarfile.TarInfo(m.name + ".new")
                extra.size, extra.mtime, extra.mode = len(data), m.mtime + 86400, m.mode
                tout.addfile(extra, io.BytesIO(data[::-1]))


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "pg":
        pg(sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 150)
    elif cmd == "redis":
        redis(int(sys.argv[2]) if len(sys.argv) > 2 else 100)
    elif cmd == "retar":
        retar(sys.argv[2], sys.argv[3])
    else:
        sys.exit(__doc__)
