#!/usr/bin/env python3
"""Import cycles between the modules of a crate's src/ (non-test code).

Each .rs file is a module (`a/mod.rs` and `a.rs` are `a`). An edge A -> B
means A names B's items: `crate::b::…`, `super::…`, `self::…`, or a child
module of A by its bare name. `mod x;` declarations and `pub use`
re-exports are containment, not edges. Test code (`*tests.rs`, fixtures
under `#[cfg(test)]`, `#[cfg(test)] mod tests { … }`) is left out.

Prints the strongly connected components with more than one module, at
file level and at top level (the crate root's children); exits 1 if any.

Usage: scripts/module-cycles.py crates/bangerd/src [crates/banger-helper/src …]
"""
import os
import re
import sys


def modules(src):
    mods = {}
    for root, _, files in os.walk(src):
        for f in files:
            if not f.endswith(".rs"):
                continue
            p = os.path.join(root, f)
            rel = os.path.relpath(p, src)[:-3].split(os.sep)
            if rel[-1] == "mod":
                rel = rel[:-1]
            if rel == ["main"]:
                continue
            if rel == ["lib"]:
                rel = []
            mods[tuple(rel)] = p
    return mods


def test_only(src, mods):
    """Modules declared under #[cfg(test)] in their parent."""
    out = set()
    for m, p in mods.items():
        text = open(p).read()
        for name in re.findall(r"#\[cfg\(test\)\]\s*(?:pub(?:\([^)]*\))?\s+)?mod\s+(\w+)\s*;", text):
            out.add(m + (name,))
    return out


def strip_tests(text):
    i = re.search(r"#\[cfg\(test\)\]\s*(?:pub(?:\([^)]*\))?\s+)?mod\s+\w+\s*\{", text)
    text = text[: i.start()] if i else text
    # comments and strings would only add false edges
    text = re.sub(r"//[^\n]*", "", text)
    return re.sub(r'"(?:\\.|[^"\\])*"', '""', text)


def expand_uses(text):
    """`use a::{b, c::d};` -> `a::b`, `a::c::d` (one brace level)."""
    paths = []
    for m in re.finditer(r"\buse\s+([^;]+);", text, re.S):
        body = re.sub(r"\s+", "", m.group(1))
        b = re.match(r"(.*?)::\{(.*)\}$", body)
        if b:
            for part in re.split(r",(?![^{]*\})", b.group(2)):
                if part:
                    paths.append(b.group(1) + "::" + part.split(" as ")[0])
        else:
            paths.append(body)
    return paths


def resolve(path, here, mods):
    parts = path.split("::")
    base = list(here)
    if parts[0] == "crate":
        base, parts = [], parts[1:]
    elif parts[0] == "self":
        parts = parts[1:]
    elif parts[0] == "super":
        while parts and parts[0] == "super":
            base, parts = base[:-1], parts[1:]
    elif tuple(here) + (parts[0],) not in mods:
        return None
    full = base + [re.sub(r"[^\w].*", "", p) for p in parts]
    for n in range(len(full), -1, -1):
        if tuple(full[:n]) in mods:
            return tuple(full[:n])
    return None


def edges(mods, skip):
    g = {m: set() for m in mods if m not in skip}
    for m in g:
        text = strip_tests(open(mods[m]).read())
        text = re.sub(r"\bpub(\([^)]*\))?\s+use\s+[^;]+;", "", text)
        text = re.sub(r"\b(pub(\([^)]*\))?\s+)?mod\s+\w+\s*;", "", text)
        refs = expand_uses(text)
        refs += re.findall(r"\b(?:crate|super|self)(?:::\w+)+", text)
        for name in {n[-1] for n in g if n and n[:-1] == m}:
            refs += re.findall(r"\b%s(?:::\w+)+" % name, text)
        for r in refs:
            t = resolve(r, m, mods)
            if t is not None and t != m and t in g:
                g[m].add(t)
    return g


def sccs(g):
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in g[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            c = []
            while True:
                w = stack.pop()
                on.discard(w)
                c.append(w)
                if w == v:
                    break
            if len(c) > 1:
                out.append(sorted(c))

    sys.setrecursionlimit(10000)
    for v in g:
        if v not in index:
            visit(v)
    return out


def name(m):
    return "::".join(m) or "crate"


def main():
    bad = False
    for src in sys.argv[1:]:
        mods = modules(src)
        skip = {m for m in mods if re.search(r"tests?$|_tests$|fixture", m[-1] if m else "")}
        skip |= test_only(src, mods)
        skip |= {m for m in mods if any(m[:n] in skip for n in range(1, len(m)))}
        g = edges(mods, skip)
        top = {}
        for a, bs in g.items():
            ta = a[:1]
            top.setdefault(ta, set())
            for b in bs:
                if b[:1] != ta and ta and b[:1]:
                    top[ta].add(b[:1])
        for level, graph in (("file", g), ("top-level", top)):
            cyc = sccs(graph)
            print(f"{src}: {len(graph)} {level} modules, {sum(map(len, graph.values()))} edges, {len(cyc)} cycles")
            for c in cyc:
                bad = True
                inner = {a: sorted(name(b) for b in graph[a] if b in c) for a in c}
                print("  cycle: " + "; ".join(f"{name(a)} -> {', '.join(bs)}" for a, bs in inner.items()))
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
