"""Pre-tokenisation: cutting text into chunks that byte-pair merges may never cross.

BPE learns merges from pair counts. Run on raw text it would happily learn tokens such as
"dog." and "dog!" and "dog?" as three unrelated ids; GPT-2 first splits text with a regular
expression (letters, digits, punctuation and whitespace go to separate chunks, a leading space
stays with the word after it) and only merges inside each chunk. The patterns need Unicode
classes such as `\\p{L}` (any letter), which is why this uses the `regex` module, not `re`.
"""
from __future__ import annotations

import functools

import regex

# GPT-2's split pattern, as in its `encoder.py`: common English contractions, an optional space
# followed by letters, or digits, or other symbols; then runs of whitespace. `\s+(?!\S)` keeps
# the last space of a run for the word that follows it, so " world" is one chunk.
GPT2_PATTERN = (
    r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
)

# GPT-4's (tiktoken's cl100k_base) split pattern. Differences from GPT-2's: contractions match
# in any case, a word may be preceded by one non-letter (not only a space), numbers are cut
# into chunks of at most three digits, and newlines are kept apart from other whitespace.
# The possessive quantifiers (`?+`, `++`) forbid backtracking; they make matching faster and
# are part of the pattern's definition.
GPT4_PATTERN = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+"""
    r"""|\s++$|\s*[\r\n]|\s+(?!\S)|\s"""
)


@functools.lru_cache(maxsize=32)
def compile_pattern(pattern: str) -> regex.Pattern[str]:
    """Compile a split pattern once; a bad pattern raises `ValueError` quoting it."""
    if not isinstance(pattern, str):
        raise TypeError(f"a split pattern must be a str, got {type(pattern).__name__}")
    try:
        return regex.compile(pattern)
    except regex.error as err:
        raise ValueError(f"invalid split pattern {pattern!r}: {err}") from None


def pretokenize(text: str, pattern: str = GPT4_PATTERN) -> list[str]:
    """Split `text` into the chunks that `pattern` matches, in order.

    Characters that the pattern matches nowhere are dropped, as in GPT-2 and tiktoken; both
    patterns above match every character, so for them `"".join(chunks) == text`.

    >>> pretokenize("Hello world, it's 2024!", GPT2_PATTERN)
    ['Hello', ' world', ',', ' it', "'s", ' 2024', '!']
    >>> pretokenize("Hello world, it's 2024!", GPT4_PATTERN)
    ['Hello', ' world', ',', ' it', "'s", ' ', '202', '4', '!']
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    return compile_pattern(pattern).findall(text)


# Llama 3's split pattern (the Split step of its `tokenizer.json`; GGUF's pre "llama-bpe").
# GPT-4's pattern without the possessive quantifiers, and `\s*[\r\n]+` takes a whole run of
# newlines at once. Written as in the file, so ids match the reference exactly.
LLAMA3_PATTERN = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"""
    r"""| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
)

# Qwen2's: Llama 3's with every digit a chunk of its own (`\p{N}` instead of `\p{N}{1,3}`).
QWEN2_PATTERN = LLAMA3_PATTERN.replace(r"\p{N}{1,3}", r"\p{N}")

# GGUF's `tokenizer.ggml.pre` "default": the patterns llama.cpp applies one after the other
# (each cuts the pieces the previous one left) when a file names no known pre-tokenizer.
LLAMA_CPP_DEFAULT_PATTERNS = (
    r"[\p{P}\$\+<=>\^~\|]+",
    r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)""",
    r"\p{N}+",
    r"[0-9][0-9][0-9]",
)


# A split pattern read from a file runs under the regex module's timeout: this many seconds
# plus this many per character, far above what an ordinary pattern needs.
_PATTERN_SECONDS, _PATTERN_SECONDS_PER_CHAR = 1.0, 2e-6
BUILTIN_PATTERNS = (GPT2_PATTERN, GPT4_PATTERN)  # ours: trusted, never probed
# Letters, digits, punctuation, spaces, newlines, tabs, CR, accents, CJK, emoji, a zero-width
# joiner and long runs: a split pattern must hand every character of it to some chunk.
_PROBE = ("Hello world, it's 2024!\n\tTabs\r\nand  spaces   x  \n\n"
          "Ünïcödé café naïve 東京 Ελληνικά русский עברית 🙂👩\u200d💻 ∑x² ½ ' \" `~$\x00\x7f "
          "I'M WE'LL they've a--b 3.14159 1,000,000 " + "a" * 40 + "!" + "9" * 40 + " " * 20 + "z")


def findall_limited(compiled, text: str, pattern: str, seconds: float | None = None) -> list[str]:
    """`compiled.findall(text)` under the regex module's timeout (see `_PATTERN_SECONDS`).

    A pattern such as `(a|aa)+$` backtracks exponentially: on 40 characters it would run for
    minutes. Patterns from files are not trusted to be linear, so they get a time budget and
    a clear error when they exceed it.
    """
    budget = seconds or _PATTERN_SECONDS + _PATTERN_SECONDS_PER_CHAR * len(text)
    try:
        return compiled.findall(text, timeout=budget)
    except TimeoutError:
        raise ValueError(f"the split pattern {pattern[:80]!r} took over {budget:.1f} s on "
                         f"{len(text)} characters (catastrophic backtracking?)") from None


def check_split_pattern(pattern: str) -> None:
    """Refuse a split pattern that is too slow or skips characters, run on `_PROBE`.

    Encoding drops what the pattern does not match, so a pattern that skips a character
    silently breaks `decode(encode(s)) == s`; a pattern with capture groups makes `findall`
    return the groups instead of the chunks. Both are caught here, at load, on a probe text.
    """
    compiled = compile_pattern(pattern)
    if compiled.groups:
        raise ValueError(f"the split pattern {pattern[:80]!r} has capture groups; use (?:...) "
                         f"so that each match is a whole chunk")
    covered = "".join(findall_limited(compiled, _PROBE, pattern, seconds=0.2))
    if covered != _PROBE:
        at = next((i for i, (a, b) in enumerate(zip(covered, _PROBE)) if a != b),
                  min(len(covered), len(_PROBE)))
        raise ValueError(f"the split pattern {pattern[:80]!r} skips characters: on the probe "
                         f"text it first drops {_PROBE[at]!r} at position {at}, so decoding "
                         f"would not give the text back")
