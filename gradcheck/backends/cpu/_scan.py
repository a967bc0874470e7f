"""Find the kernels in preprocessed CUDA source and rewrite what g++ cannot take as it is.

The prelude header turns ``__global__`` into ``__attribute__((cudacpu_global))`` and ``__shared__``
into ``__attribute__((cudacpu_shared)) static thread_local``; those markers survive preprocessing,
so the kernels (with their namespaces, template instantiations and overloads) can be found in the
compiler's own view of the source rather than by guessing at macros in the raw text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

GLOBAL_MARK = "__attribute__((cudacpu_global))"
SHARED_MARK = "__attribute__((cudacpu_shared))"

_TOKENS = re.compile(
    r'R"(?P<delim>[^()\\ ]{0,16})\(.*?\)(?P=delim)"'  # raw string
    r'|"(?:\\.|[^"\\\n])*"'
    r"|'(?:\\.|[^'\\\n])*'"
    r"|^[ \t]*#[^\n]*"  # linemarker / pragma line
    r"|[{};]"
    r"|__attribute__\(\(cudacpu_(?:global|shared)\)\)",
    re.M | re.S,
)
_NAMESPACE = re.compile(
    r"(?:inline\s+)?namespace\s*([\w:]*)\s*(?:__attribute__\s*\(\(.*\)\))?\s*$", re.S
)
_EXTERN_C = re.compile(r'extern\s*"C(?:\+\+)?"\s*$')
_LINEMARK = re.compile(r"^[ \t]*#[^\n]*\n?", re.M)
_ATTRIBUTE = re.compile(r"__attribute__\s*\(\(")
_DECLARATOR = re.compile(r"([A-Za-z_]\w*(?:\s*::\s*[A-Za-z_]\w*)*)\s*(<[^()]*>)?\s*$", re.S)


@dataclass(frozen=True)
class KernelDecl:
    """A launchable kernel found in the source."""

    name: str  # qualified, with template arguments for an instantiation: "ns::k<256>"
    params: str  # the parameter list as written
    expr: str  # a C++ constant expression naming the function
    param_names: tuple[str, ...]


@dataclass(frozen=True)
class Scan:
    kernels: tuple[KernelDecl, ...]
    templates: tuple[str, ...]  # template kernels with no explicit instantiation
    text: str  # the preprocessed source with dynamic shared memory rewritten


def scan(text: str, start: int = 0) -> Scan:
    """Scan preprocessed source from ``start`` (where the user's code begins)."""
    scopes: list[tuple[str, str]] = []  # (kind, name): namespace / linkage / block
    boundary = start
    definitions: list[tuple[str, str]] = []  # (qualified name, params), non-template kernels
    primaries: dict[str, str] = {}  # template kernel -> namespace prefix
    instantiations: list[tuple[str, str, str]] = []
    edits: list[tuple[int, int, str]] = []

    for tok in _TOKENS.finditer(text, start):
        t = tok.group()
        if t == "{":
            prefix = _prefix(text, boundary, tok.start())
            m = _NAMESPACE.search(prefix)
            if m and not re.search(r"[()=]", prefix):
                scopes.append(("namespace", m.group(1) or "(anonymous)"))
            elif _EXTERN_C.search(prefix):
                scopes.append(("linkage", ""))
            else:
                scopes.append(("block", ""))
            boundary = tok.end()
        elif t == "}":
            if scopes:
                scopes.pop()
            boundary = tok.end()
        elif t == ";":
            boundary = tok.end()
        elif t == GLOBAL_MARK:
            found = _kernel_at(text, tok.end())
            if found is None:
                continue
            name, targs, params, follows = found
            prefix = _prefix(text, boundary, tok.start())
            ns = "::".join(n for k, n in scopes if k == "namespace")
            qualified = f"{ns}::{name}" if ns else name
            is_primary = re.search(r"\btemplate\s*<", prefix) is not None
            if is_primary:
                primaries.setdefault(qualified, ns)
            elif (
                re.search(r"\btemplate\s*$", prefix) and "extern" not in prefix.split("template")[0]
            ):
                instantiations.append((qualified, targs, params))
            elif follows == "{":
                definitions.append((qualified, params))
        elif t == SHARED_MARK:
            edit = _rewrite_extern_shared(text, boundary, tok, in_function=_in_function(scopes))
            if edit:
                edits.append(edit)

    # Explicit instantiations written without __global__ (`template void k<128>(float*);`).
    for qualified in primaries:
        short = qualified.rsplit("::", 1)[-1]
        pat = re.compile(
            r"\btemplate\s+(?:"
            + re.escape(GLOBAL_MARK)
            + r"\s*)?void\s+(?:[\w:]*::)?"
            + re.escape(short)
            + r"\s*(<[^;{}]*?>)?\s*\(([^;{}]*)\)\s*;",
            re.S,
        )
        for m in pat.finditer(text, start):
            instantiations.append((qualified, m.group(1) or "", m.group(2)))

    kernels: list[KernelDecl] = []
    counts: dict[str, int] = {}
    for qualified, _ in definitions:
        counts[qualified] = counts.get(qualified, 0) + 1
    for qualified, params in definitions:
        ptr = f"&::{qualified}"
        expr = (
            ptr
            if counts[qualified] == 1
            else f"static_cast<void(*)({_no_defaults(params)})>({ptr})"
        )
        kernels.append(KernelDecl(qualified, _squash(params), expr, param_names(params)))
    seen: set[tuple[str, str, str]] = set()
    for qualified, targs, params in instantiations:
        key = (qualified, _squash(targs), _squash(params))
        if key in seen:
            continue
        seen.add(key)
        targs_s = _squash(targs)
        expr = f"static_cast<void(*)({_no_defaults(params)})>(&::{qualified}{targs_s})"
        kernels.append(KernelDecl(qualified + targs_s, _squash(params), expr, param_names(params)))
    instantiated = {q for q, _, _ in instantiations}
    templates = tuple(q for q in primaries if q not in instantiated)

    out = text
    for a, b, repl in sorted(edits, reverse=True):
        out = out[:a] + repl + out[b:]
    return Scan(tuple(kernels), templates, out)


def _prefix(text: str, a: int, b: int) -> str:
    return _LINEMARK.sub(" ", text[a:b]).strip()


def _in_function(scopes: list[tuple[str, str]]) -> bool:
    return any(kind == "block" for kind, _ in scopes)


def _kernel_at(text: str, pos: int) -> tuple[str, str, str, str] | None:
    """Parse ``[decl-specifiers] name [<targs>] (params)`` after a __global__ marker."""
    i, seen = pos, []
    for _ in range(64):
        paren = text.find("(", i)
        if paren < 0:
            return None
        chunk = text[i:paren].rstrip()
        if chunk.endswith("__attribute__"):  # skip an attribute's parentheses
            seen.append(chunk[: -len("__attribute__")])
            i = _close(text, paren) + 1
            continue
        seen.append(chunk)
        m = _DECLARATOR.search(" ".join(seen))
        if not m:
            return None
        close = _close(text, paren)
        rest = _strip_attributes(_LINEMARK.sub(" ", text[close + 1 : close + 400])).lstrip()
        return re.sub(r"\s+", "", m.group(1)), m.group(2) or "", text[paren + 1 : close], rest[:1]
    return None


def _close(text: str, open_paren: int) -> int:
    depth = 0
    for j in range(open_paren, len(text)):
        c = text[j]
        if c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
            if depth == 0:
                return j
    return len(text) - 1


def _strip_attributes(s: str) -> str:
    while True:
        m = _ATTRIBUTE.search(s)
        if not m:
            return s
        j = _close(s, m.end() - 2)
        s = s[: m.start()] + " " + s[j + 1 :]


def _squash(s: str) -> str:
    return re.sub(r"\s+", " ", _LINEMARK.sub(" ", s)).strip()


def _no_defaults(params: str) -> str:
    parts = _split_params(_squash(params))
    return ", ".join(p.split("=", 1)[0].strip() for p in parts)


def _split_params(params: str) -> list[str]:
    parts: list[str] = []
    cur: list[str] = []
    depth = 0
    for c in params:
        if c in "(<[":
            depth += 1
        elif c in ")>]":
            depth -= 1
        if c == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(c)
    if "".join(cur).strip():
        parts.append("".join(cur))
    return parts


_TYPE_WORDS = frozenset(
    [
        "int",
        "float",
        "double",
        "char",
        "short",
        "long",
        "unsigned",
        "signed",
        "bool",
        "void",
        "size_t",
        "const",
        "volatile",
    ]
)


def param_names(params: str) -> tuple[str, ...]:
    """The declared name of each parameter ('' where the declaration names none)."""
    names = []
    for p in _split_params(_squash(params)):
        p = _strip_attributes(p.split("=", 1)[0]).replace("__restrict__", " ").strip()
        if p in ("", "void"):
            continue
        words = re.findall(r"[A-Za-z_]\w*|[*&]", p)
        last = words[-1] if words else ""
        named = len(words) > 1 and last not in _TYPE_WORDS and last not in "*&"
        names.append(last if named else "")
    return tuple(names)


_EXTERN_SHARED = re.compile(
    r"extern\s+" + re.escape(SHARED_MARK) + r"\s*static\s+thread_local\s+"
    r"(?P<decl>[^;\[\]]*?)\s*\b(?P<name>[A-Za-z_]\w*)\s*\[\s*\]\s*;",
    re.S,
)


def _rewrite_extern_shared(
    text: str, boundary: int, tok: re.Match[str], in_function: bool
) -> tuple[int, int, str] | None:
    """``extern __shared__ T name[];`` -> a view of the block's dynamic shared memory."""
    ext = text.rfind("extern", boundary, tok.start())
    if ext < 0:
        return None
    m = _EXTERN_SHARED.match(text, ext)
    if not m:
        return None
    decl = _squash(_strip_attributes(m.group("decl")))
    name = m.group("name")
    if in_function:
        repl = f"{decl}* const {name} = reinterpret_cast<{decl}*>(cudacpu_tls.dsmem);"
    else:
        repl = f"static cudacpu::dyn_shared<{decl}> {name};"
    return m.start(), m.end(), repl
