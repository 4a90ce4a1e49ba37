#!/usr/bin/env python3
"""Build the "techfaq" BEIR-format retrieval set from Debian documentation packages.

Queries are the questions of three human-written FAQs (Python FAQ, perlfaq1-9,
Debian FAQ); the relevant passage of each query is the start of its own answer.
Distractor passages are sections of the Python, Perl and Debian reference documentation.

Usage: python3 bench/data/techfaq.py [OUT_DIR]   (needs apt-get, dpkg-deb and perl/pod2text)
"""

from __future__ import annotations

import hashlib
import html
import json
import random
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

PACKAGES = {  # Debian 12 (bookworm) versions used for the published build
    "python3.11-doc": "3.11.2-6+deb12u9",
    "perl-doc": "5.36.0-7+deb12u4",
    "debian-faq": "11.1",
    "debian-reference-en": "2.100",
}
MAX_CHARS = 2000  # passages are cut at a paragraph boundary below this length
MIN_CHARS = 700  # distractor windows grow until at least this long
MIN_ANSWER = 40  # FAQ entries with a shorter answer are dropped
SEED = 13

OUT = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).parent)
RAW = OUT / "raw"


# ---------------------------------------------------------------- download


def fetch() -> dict[str, Path]:
    """Download and unpack the .deb files; return package -> unpacked root."""
    RAW.mkdir(parents=True, exist_ok=True)
    roots = {}
    for pkg, ver in PACKAGES.items():
        debs = sorted(RAW.glob(f"{pkg}_*.deb"))
        if not debs:
            spec = f"{pkg}={ver}"
            res = subprocess.run(["apt-get", "download", spec], cwd=RAW)
            if res.returncode != 0:  # version gone from the mirror: take the current one
                subprocess.run(["apt-get", "download", pkg], cwd=RAW, check=True)
            debs = sorted(RAW.glob(f"{pkg}_*.deb"))
        root = RAW / pkg
        if not root.exists():
            subprocess.run(["dpkg-deb", "-x", str(debs[-1]), str(root)], check=True)
        roots[pkg] = root
    return roots


# ---------------------------------------------------------------- text utils


def squash(text: str) -> str:
    """Collapse whitespace inside paragraphs; keep one newline between paragraphs."""
    paras = [re.sub(r"\s+", " ", p).strip() for p in re.split(r"\n\s*\n", text)]
    return "\n".join(p for p in paras if p)


def cut(text: str, limit: int = MAX_CHARS) -> str:
    """First paragraphs of text that fit in limit (a long first one is cut at a space)."""
    out = ""
    for para in text.split("\n"):
        cand = f"{out}\n{para}" if out else para
        if len(cand) > limit:
            if not out:
                out = para[:limit].rsplit(" ", 1)[0]
            break
        out = cand
    return out


def windows(text: str) -> list[str]:
    """Split text into paragraph-aligned windows of MIN_CHARS..MAX_CHARS characters."""
    out, cur = [], ""
    for para in text.split("\n"):
        while len(para) > MAX_CHARS:
            head = para[:MAX_CHARS].rsplit(" ", 1)[0] or para[:MAX_CHARS]
            if cur:
                out.append(cur)
                cur = ""
            out.append(head)
            para = para[len(head) :].strip()
        cand = f"{cur}\n{para}" if cur else para
        if len(cand) > MAX_CHARS:
            out.append(cur)
            cur = para
        else:
            cur = cand
        if len(cur) >= MIN_CHARS:
            out.append(cur)
            cur = ""
    if cur:
        if out and len(out[-1]) + len(cur) + 1 <= MAX_CHARS:
            out[-1] = f"{out[-1]}\n{cur}"
        else:
            out.append(cur)
    return [w for w in out if len(w) >= 100]


def is_question(title: str) -> bool:
    return title.rstrip().endswith("?")


# ---------------------------------------------------------------- reST (Python docs)

ROLE_TILDE = re.compile(r":[\w:.-]+:`~([^`<]*?)`")
ROLE_LINK = re.compile(r":[\w:.-]+:`([^`<]*?)\s*<[^`>]*>`")
ROLE_PLAIN = re.compile(r":[\w:.-]+:`!?([^`]*)`")
EXT_LINK = re.compile(r"`([^`<]+?)\s*<[^`>]+>`__?")
LITERAL = re.compile(r"``(.+?)``")
REF = re.compile(r"`([^`]+)`_")
EMPH = re.compile(r"\*\*(\S.*?)\*\*|\*(\S.*?)\*")
HEADING_CHARS = set("=-~^\"'`#*+.:_")
SKIP_DIRECTIVES = {
    "index",
    "toctree",
    "highlight",
    "module",
    "moduleauthor",
    "sectionauthor",
    "currentmodule",
    "testsetup",
    "testcleanup",
    "contents",
    "tabularcolumns",
    "only",
    "raw",
    "impl-detail",
    "audit-event",
    "availability",
    "include",
    "literalinclude",
    "image",
    "figure",
    "productionlist",
    "glossary",
}
KEEP_LABEL = {
    "note": "Note:",
    "warning": "Warning:",
    "seealso": "See also:",
    "versionadded": "New in version",
    "versionchanged": "Changed in version",
    "deprecated": "Deprecated since version",
}


def rst_inline(text: str) -> str:
    text = re.sub(
        r":(pep|rfc):`!?(\d+)[^`]*`", lambda m: f"{m.group(1).upper()} {m.group(2)}", text
    )
    text = ROLE_TILDE.sub(lambda m: m.group(1).split(".")[-1], text)
    text = ROLE_LINK.sub(r"\1", text)
    text = ROLE_PLAIN.sub(r"\1", text)
    text = EXT_LINK.sub(r"\1", text)
    text = LITERAL.sub(r"\1", text)
    text = REF.sub(r"\1", text)
    text = EMPH.sub(lambda m: m.group(1) or m.group(2), text)
    return text.replace("\\", "")


def is_underline(line: str, title: str) -> bool:
    s = line.strip()
    return (
        len(s) >= 3
        and len(set(s)) == 1
        and s[0] in HEADING_CHARS
        and len(s) >= len(title.strip()) - 2
        and not line.startswith(" ")
    )


def rst_sections(src: str) -> list[tuple[str, str]]:
    """Split a reST file into (heading, raw body) pairs; overlines are dropped."""
    lines = src.split("\n")
    heads = []
    for i in range(len(lines) - 1):
        t = lines[i]
        heading = t.strip() and not t.startswith((" ", "..")) and is_underline(lines[i + 1], t)
        if heading and not (len(set(t.strip())) == 1 and t.strip()[0] in HEADING_CHARS):
            heads.append(i)
    out = []
    for n, i in enumerate(heads):
        end = heads[n + 1] if n + 1 < len(heads) else len(lines)
        body = lines[i + 2 : end]
        if n + 1 < len(heads) and end - 1 > i and is_underline(lines[end - 1], lines[end]):
            body = lines[i + 2 : end - 1]  # drop the next heading's overline
        out.append((rst_inline(lines[i].strip()), "\n".join(body)))
    return out


def rst_text(body: str) -> str:
    """reST body -> plain text (directives unwrapped or dropped, markup removed)."""
    out, skip_indent, prev_directive = [], None, False
    for line in body.split("\n"):
        indent = len(line) - len(line.lstrip())
        if skip_indent is not None:
            if not line.strip() or indent > skip_indent:
                continue
            skip_indent = None
        m = re.match(r"(\s*)\.\.\s+([\w:-]+)::\s*(.*)", line)
        if m:
            name = m.group(2).split(":")[-1]
            arg = m.group(3)
            prev_directive = True
            if name in SKIP_DIRECTIVES:
                skip_indent = indent
                continue
            if name in KEEP_LABEL:
                out.append("")
                out.append(f"{KEEP_LABEL[name]} {rst_inline(arg)}".strip())
                continue
            if name in {"code-block", "sourcecode", "code", "doctest", "testcode", "testoutput"}:
                out.append("")
                continue
            out.append("")
            out.append(rst_inline(arg))  # function/class/... signatures
            out.append("")
            continue
        if re.match(r"\s*\.\.(\s|$)", line):  # comments, targets, substitutions
            skip_indent = indent
            continue
        if line.strip() and len(set(line.strip())) == 1 and line.strip()[0] in "=-+":
            continue  # table borders
        if line.rstrip().endswith("::"):
            line = line.rstrip()[:-1] if line.strip() != "::" else ""
        if re.match(r"\s+:[\w-]+:(\s.*)?$", line) and prev_directive:
            continue  # directive options such as :hide:
        prev_directive = False
        out.append(line)
    return "\n".join(rst_inline(p).replace("|", " ") for p in squash("\n".join(out)).split("\n"))


# ---------------------------------------------------------------- POD (Perl docs)

MARK = "QQSECTIONQQ"


def pod_sections(path: Path) -> tuple[str, list[tuple[int, str, str]]]:
    """Render a .pod with pod2text; return (NAME line, [(level, heading, text)])."""
    src = path.read_text(encoding="utf-8", errors="replace")
    src = re.sub(
        r"^=head([1-4])[ \t]+", lambda m: f"=head{m.group(1)} {MARK}{m.group(1)} ", src, flags=re.M
    )
    res = subprocess.run(
        [
            "perl",
            "-MPod::Text",
            "-e",
            "my $p = Pod::Text->new(width => 100000, indent => 0, sentence => 0,"
            " margin => 0, utf8 => 1); $p->no_errata_section(1); $p->complain_stderr(0);"
            " my $out; $p->output_string(\\$out); $p->parse_string_document(join('', <STDIN>));"
            " binmode STDOUT, ':utf8'; print $out;",
        ],
        input=src.encode(),
        capture_output=True,
        check=True,
    )
    text = res.stdout.decode("utf-8", errors="replace")
    parts = re.split(rf"^\s*{MARK}([1-4]) (.*)$", text, flags=re.M)
    secs = [(int(parts[i]), parts[i + 1].strip(), parts[i + 2]) for i in range(1, len(parts), 3)]
    name = ""
    for lvl, head, body in secs:
        if lvl == 1 and head == "NAME":
            name = squash(body).split("\n")[0]
    return name, secs


# ---------------------------------------------------------------- HTML (Debian FAQ)


class _Text(HTMLParser):
    BLOCK = {"p", "pre", "li", "dt", "dd", "div", "tr", "br", "table", "ul", "ol", "dl"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag in self.BLOCK:
            self.parts.append("\n\n")

    def handle_endtag(self, tag):
        if tag in self.BLOCK:
            self.parts.append("\n\n")

    def handle_data(self, data):
        self.parts.append(data)


def html_text(fragment: str) -> str:
    p = _Text()
    p.feed(fragment)
    return squash("".join(p.parts))


def html_sections(src: str) -> tuple[str, list[tuple[str, str]]]:
    src = re.sub(
        r'<div class="(navheader|navfooter|toc)">.*?</div>\s*(?=<div|<h|<p)', "", src, flags=re.S
    )
    src = re.sub(r'<div class="toc">.*?</dl></div>', "", src, flags=re.S)
    chapter = re.search(r"<title>(.*?)</title>", src, flags=re.S)
    parts = re.split(r'<h([1-4]) class="title"[^>]*>(.*?)</h\1>', src, flags=re.S)
    secs = []
    for i in range(1, len(parts), 3):
        head = html_text(parts[i + 1])
        head = re.sub(r"^[0-9]+(\.[0-9]+)*\.\s*", "", head.replace("\n", " ")).strip()
        secs.append((head, html_text(parts[i + 2])))
    return html.unescape(chapter.group(1)) if chapter else "", secs


# ---------------------------------------------------------------- collection


def collect(roots: dict[str, Path]):
    faq, docs = [], []  # faq: (src, title, question, answer); docs: (src, title, text)

    pyroot = roots["python3.11-doc"] / "usr/share/doc/python3.11/html/_sources"
    for f in sorted((pyroot / "faq").glob("*.rst.txt")):
        secs = rst_sections(f.read_text(encoding="utf-8"))
        page = secs[0][0] if secs else f.stem
        category = page
        for head, body in secs:
            text = rst_text(body)
            if is_question(head):
                title = f"Python {page}" if category == page else f"Python {page}: {category}"
                faq.append((f"python/faq/{f.name}", title, head, text))
            else:
                category = head
    for sub in ("tutorial", "howto", "library", "reference"):
        for f in sorted((pyroot / sub).glob("*.rst.txt")):
            secs = rst_sections(f.read_text(encoding="utf-8"))
            page = secs[0][0] if secs else f.stem
            for head, body in secs:
                title = page if head == page else f"{page}: {head}"
                docs.append((f"python/{sub}/{f.name}", title, rst_text(body)))

    podroot = next((roots["perl-doc"] / "usr/share/perl").glob("5.*/pod"))
    for f in sorted(podroot.glob("perlfaq[1-9].pod")):
        name, secs = pod_sections(f)
        for lvl, head, body in secs:
            if lvl == 2 and is_question(head):
                faq.append((f"perl/{f.name}", name, head, squash(body)))
    skip = re.compile(
        r"perl(faq|\d+delta|uniprops|ebcdic|os390|os400|plan9|hurd|macosx|delta|hist|toc|ko|cn|jp|tw|vms|aix|win32|"
        r"irix|hpux|cygwin|os2|solaris|android|bs2000|qnx|haiku|"
        r"riscos|beos|dos|amiga|freebsd|openbsd|darwin|linux|macos|netware|"
        r"symbian|tru64|vos|synology|ce|artistic|gpl|"
        r"modlib|apio?|guts|intern|clib|xs\w*|policy|git\w*|hack\w*|source|"
        r"repository|howtoc?|deprecation|diag)\b"
    )
    for f in sorted(podroot.glob("perl*.pod")):
        if skip.match(f.stem):
            continue
        name, secs = pod_sections(f)
        for _lvl, head, body in secs:
            if head in {
                "NAME",
                "AUTHOR",
                "AUTHORS",
                "COPYRIGHT",
                "SEE ALSO",
                "AUTHOR AND COPYRIGHT",
                "COPYRIGHT AND LICENSE",
                "VERSION",
            }:
                continue
            docs.append((f"perl/{f.name}", f"{name}: {head}" if name else head, squash(body)))

    dfroot = roots["debian-faq"] / "usr/share/doc/debian/FAQ"
    for f in sorted(dfroot.glob("*.en.html")):
        if f.name in {"index.en.html", "faqinfo.en.html"}:
            continue
        chapter, secs = html_sections(f.read_text(encoding="utf-8"))
        chapter = re.sub(r"^Chapter [0-9]+\.\s*", "", chapter)
        for head, body in secs:
            if is_question(head):
                faq.append((f"debian-faq/{f.name}", f"Debian FAQ: {chapter}", head, body))
    drroot = roots["debian-reference-en"] / "usr/share/debian-reference"
    for f in sorted(drroot.glob("*.en.html")):
        if f.name == "index.en.html":
            continue
        chapter, secs = html_sections(f.read_text(encoding="utf-8"))
        chapter = re.sub(r"^Chapter [0-9]+\.\s*", "", chapter)
        for head, body in secs:
            docs.append(
                (f"debian-reference/{f.name}", f"Debian Reference: {chapter}: {head}", body)
            )
    return faq, docs


def norm(s: str) -> str:
    return re.sub(r"\W+", " ", s.lower()).strip()


def build() -> None:
    roots = fetch()
    faq, docs = collect(roots)

    queries, passages, qrels, seen_q = [], [], [], set()
    for src, title, question, answer in faq:
        text = cut(answer)
        if len(text) < MIN_ANSWER or norm(question) in seen_q:
            continue
        seen_q.add(norm(question))
        queries.append((src, question))
        passages.append((src, title, text, len(queries) - 1))
    seen_p = {norm(p[2]) for p in passages}
    for src, title, text in docs:
        for w in windows(text):
            if norm(w) not in seen_p:
                seen_p.add(norm(w))
                passages.append((src, title, w, None))

    rng = random.Random(SEED)
    order = list(range(len(passages)))
    rng.shuffle(order)
    qorder = list(range(len(queries)))
    rng.shuffle(qorder)
    qid = {qi: f"q{n:04d}" for n, qi in enumerate(qorder)}

    (OUT / "qrels").mkdir(parents=True, exist_ok=True)
    with (
        open(OUT / "corpus.jsonl", "w", encoding="utf-8") as fc,
        open(OUT / "sources.tsv", "w", encoding="utf-8") as fs,
    ):
        fs.write("id\tsource\n")
        for n, pi in enumerate(order):
            src, title, text, q = passages[pi]
            did = f"d{n:05d}"
            fc.write(
                json.dumps({"_id": did, "title": title, "text": text}, ensure_ascii=False) + "\n"
            )
            fs.write(f"{did}\t{src}\n")
            if q is not None:
                qrels.append((qid[q], did))
    with open(OUT / "queries.jsonl", "w", encoding="utf-8") as fq:
        for qi in qorder:
            fq.write(
                json.dumps(
                    {
                        "_id": qid[qi],
                        "text": queries[qi][1],
                        "metadata": {"source": queries[qi][0]},
                    },
                    ensure_ascii=False,
                )
                + "\n"
            )
    qrels.sort()
    with open(OUT / "qrels/test.tsv", "w", encoding="utf-8") as fr:
        fr.write("query-id\tcorpus-id\tscore\n")
        for q, d in qrels:
            fr.write(f"{q}\t{d}\t1\n")

    by_src: dict[str, int] = {}
    for src, _ in queries:
        key = src.split("/")[0]
        by_src[key] = by_src.get(key, 0) + 1
    digest = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(RAW.glob("*.deb"))}
    print(
        json.dumps(
            {
                "queries": len(queries),
                "queries_by_source": by_src,
                "passages": len(passages),
                "relevant": len(qrels),
                "debs_sha256": digest,
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    build()
