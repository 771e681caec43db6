"""Reading and writing BPE vocabularies: numpylm's own file, tiktoken's ranks, GPT-2's files.

The same tokenizer travels in three shapes. A tiktoken `.tiktoken` file lists each token's
bytes (base64) with its rank and no merges at all: the merge that made a token is recovered by
running BPE on its bytes with only lower-ranked tokens, which stops at exactly two pieces.
GPT-2's `vocab.json` + `merges.txt` list tokens and merges as text, after mapping every byte
to a printable character (`bytes_to_unicode`) so that spaces and control bytes survive in a
whitespace-separated text file. Every malformed line is reported by its number.
"""
from __future__ import annotations

import base64
import binascii
import functools
import json
import os
from collections.abc import Mapping
from pathlib import Path

from numpylm.io.config import parse_json
from numpylm.io.errors import FileFormatError
from numpylm.io.text import read_utf8, write_utf8
from numpylm.tokenizers.bpe import BPETokenizer, SpecialTokens, show_bytes
from numpylm.tokenizers.bpe_merge import apply_merges


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's map from each byte value to one printable character, as a dict in byte order.

    Bytes that are already printable and not whitespace ('!'..'~', '¡'..'¬', '®'..'ÿ') map to
    themselves; the other 68 (controls, space, DEL, NBSP, soft hyphen ...) map, in byte order,
    to chr(256), chr(257), ... So a space is 'Ġ' (chr(288)) and a newline 'Ċ' (chr(266)).
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    printable += range(ord("®"), ord("ÿ") + 1)
    mapping = {b: chr(b) for b in printable}
    shifted = 0
    for b in range(256):
        if b not in mapping:
            mapping[b] = chr(256 + shifted)
            shifted += 1
    return dict(sorted(mapping.items()))


def _special_mapping(special_tokens: SpecialTokens, first_free_id: int) -> dict[str, int]:
    if special_tokens is None:
        return {}
    if isinstance(special_tokens, Mapping):
        return dict(special_tokens)
    if isinstance(special_tokens, str):
        raise TypeError("special_tokens must be a list of strings or a mapping, not one str")
    return {name: first_free_id + i for i, name in enumerate(special_tokens)}


def _names_file(read):
    """Make every `ValueError` of a reader a `FileFormatError`: the messages already name the
    file and line, so only the class changes (and `path` is kept for the caller)."""
    @functools.wraps(read)
    def wrapper(path, *args, **kwargs):
        try:
            return read(path, *args, **kwargs)
        except FileFormatError:
            raise
        except ValueError as err:
            error = FileFormatError(None, str(err))
            error.path = os.fspath(path)
            raise error from None
    return wrapper


# ---- numpylm's own format ---------------------------------------------------------------


def parse_numpylm_bpe(text: str) -> BPETokenizer:
    """Read the text `BPETokenizer.to_string` writes."""
    lines = text.split("\n")
    header = f"{BPETokenizer.MAGIC} {BPETokenizer.VERSION}"
    if lines[0].strip() != header:
        raise ValueError(f"line 1: expected {header!r}, got {lines[0][:60]!r}")
    pattern: str | None = None
    byte_ids: list[int] | None = None
    specials: dict[str, int] = {}
    merges: list[tuple[int, int, int]] = []
    merge_lines: list[int] = []
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip() or line.startswith("#"):
            continue
        key, _, rest = line.partition(" ")
        try:
            if key == "pattern" and pattern is None:
                pattern = parse_json(rest)
                if not isinstance(pattern, str):
                    raise ValueError("the pattern must be a JSON string")
            elif key == "bytes" and byte_ids is None:
                identity = rest.strip() == "identity"
                byte_ids = list(range(256)) if identity else [int(x) for x in rest.split()]
                if len(byte_ids) != 256:
                    raise ValueError(f"expected 256 byte ids, got {len(byte_ids)}")
            elif key == "special":
                token, _, name = rest.partition(" ")
                name = parse_json(name)
                if not isinstance(name, str) or name in specials:
                    raise ValueError(f"special token {name!r} is not a string or is repeated")
                specials[name] = int(token)
            elif key == "merge":
                fields = rest.split("#", 1)[0].split()
                if len(fields) != 3:
                    raise ValueError("a merge is three ids: left right new")
                left, right, new = (int(x) for x in fields)
                merges.append((left, right, new))
                merge_lines.append(number)
            else:
                raise ValueError(f"unexpected or repeated entry {key!r}")
        except ValueError as err:  # json.JSONDecodeError and int() errors are ValueErrors too
            raise ValueError(f"line {number}: {err}") from None
    if pattern is None or byte_ids is None:
        raise ValueError("the file has no `pattern` line or no `bytes` line")
    return BPETokenizer(
        merges,
        byte_ids=byte_ids,
        pattern=pattern,
        special_tokens=specials,
        _where=lambda rank: f"line {merge_lines[rank]}",
    )


# ---- tiktoken ---------------------------------------------------------------------------


@_names_file
def read_tiktoken(
    path: str | os.PathLike[str], pattern: str, special_tokens: SpecialTokens = None
) -> BPETokenizer:
    """Read a `.tiktoken` rank file and recover its merges (see the module docstring)."""
    ranks: dict[bytes, int] = {}
    line_of_rank: dict[int, int] = {}
    lines = read_utf8(path, "tiktoken file").splitlines()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{path} line {number}"
        fields = line.split()
        if len(fields) != 2:
            raise ValueError(f"{where}: expected 'base64-token rank', got {line[:60]!r}")
        try:
            token = base64.b64decode(fields[0], validate=True)
        except (binascii.Error, ValueError):
            raise ValueError(f"{where}: {fields[0][:40]!r} is not valid base64") from None
        if not fields[1].isdigit():
            raise ValueError(f"{where}: rank {fields[1][:20]!r} is not a non-negative integer")
        rank = int(fields[1])
        if not token:
            raise ValueError(f"{where}: the token is empty")
        if token in ranks:
            shown = show_bytes(token)
            raise ValueError(f"{where}: token {shown!r} already has rank {ranks[token]}")
        if rank in line_of_rank:
            raise ValueError(f"{where}: rank {rank} is already used on line {line_of_rank[rank]}")
        ranks[token] = rank
        line_of_rank[rank] = number
    missing = [b for b in range(256) if bytes([b]) not in ranks]
    if missing:
        raise ValueError(
            f"{path}: no rank for {len(missing)} single bytes, e.g. byte 0x{missing[0]:02x}"
        )

    byte_ids = [ranks[bytes([b])] for b in range(256)]
    pair_rank: dict[tuple[int, int], int] = {}
    merged_id: list[int] = []
    merges: list[tuple[int, int, int]] = []
    longer = sorted((rank, token) for token, rank in ranks.items() if len(token) > 1)
    for rank, token in longer:
        # Only lower ranks are in `pair_rank` yet, so BPE on the token's own bytes stops just
        # before making it, at the two tokens it is made of.
        parts = apply_merges([byte_ids[b] for b in token], pair_rank, merged_id)
        if len(parts) != 2:
            raise ValueError(
                f"{path} line {line_of_rank[rank]}: token {show_bytes(token)!r} is not the merge "
                f"of two lower-ranked tokens (BPE on its bytes stops at {len(parts)} pieces)"
            )
        pair_rank[(parts[0], parts[1])] = len(merged_id)
        merged_id.append(rank)
        merges.append((parts[0], parts[1], rank))
    specials = _special_mapping(special_tokens, max(ranks.values()) + 1)
    return BPETokenizer(
        merges, byte_ids=byte_ids, pattern=pattern, special_tokens=specials, _trusted=True
    )


def write_tiktoken(tokenizer: BPETokenizer, path: str | os.PathLike[str]) -> None:
    """Write ordinary tokens as `base64 rank` lines, with rank = id."""
    # tiktoken merges by rank = id; that replays our merges only if ids grow in merge order.
    new_ids = [new for _, _, new in tokenizer.merges]
    ordered = [max(tokenizer.byte_ids), *new_ids]
    if any(a >= b for a, b in zip(ordered, ordered[1:])):
        raise ValueError("tiktoken ranks are ids: the merges' new ids must increase in merge order")
    ranks = sorted(tokenizer.mergeable_ranks().items(), key=lambda item: item[1])
    lines = [f"{base64.b64encode(token).decode('ascii')} {rank}\n" for token, rank in ranks]
    write_utf8(path, "".join(lines))


# ---- GPT-2's vocab.json + merges.txt ----------------------------------------------------


@_names_file
def read_hf(
    vocab_json: str | os.PathLike[str], merges_txt: str | os.PathLike[str], pattern: str
) -> BPETokenizer:
    """Read GPT-2's `vocab.json` + `merges.txt`; unmerged extra entries become special tokens."""
    text = read_utf8(vocab_json, "vocab.json")
    vocab = parse_json(text, vocab_json, reject_duplicates=True)  # a token listed twice too
    if not isinstance(vocab, dict):
        raise ValueError(f"{vocab_json}: expected a JSON object from token to id")
    owner: dict[int, str] = {}
    for token, token_id in vocab.items():
        if not isinstance(token_id, int) or isinstance(token_id, bool) or token_id < 0:
            raise ValueError(f"{vocab_json}: token {token!r} has id {token_id!r}, not an int >= 0")
        if token_id in owner:
            raise ValueError(
                f"{vocab_json}: id {token_id} is given to both {owner[token_id]!r} and {token!r}"
            )
        owner[token_id] = token

    byte_to_char = bytes_to_unicode()
    byte_ids = []
    for b, char in byte_to_char.items():
        if char not in vocab:
            raise ValueError(f"{vocab_json}: no entry for byte 0x{b:02x} (written {char!r})")
        byte_ids.append(vocab[char])

    used = set(byte_ids)
    merges: list[tuple[int, int, int]] = []
    merge_lines: list[int] = []
    lines = read_utf8(merges_txt, "merges.txt").splitlines()
    for number, line in enumerate(lines, start=1):
        line = line.strip()
        if not line or (number == 1 and line.startswith("#version")):
            continue
        parts = line.split(" ")
        if len(parts) != 2 or not all(parts):
            raise ValueError(f"{merges_txt} line {number}: expected two tokens and one space")
        for part in (*parts, parts[0] + parts[1]):
            if part not in vocab:
                raise ValueError(f"{merges_txt} line {number}: {part!r} is not in vocab.json")
        merges.append((vocab[parts[0]], vocab[parts[1]], vocab[parts[0] + parts[1]]))
        merge_lines.append(number)
        used.add(vocab[parts[0] + parts[1]])
    specials = {token: token_id for token, token_id in vocab.items() if token_id not in used}
    return BPETokenizer(
        merges,
        byte_ids=byte_ids,
        pattern=pattern,
        special_tokens=specials,
        _where=lambda rank: f"{merges_txt} line {merge_lines[rank]}",
    )


def write_hf(tokenizer: BPETokenizer, directory: str | os.PathLike[str]) -> None:
    """Write `vocab.json` (token -> id, in id order) and `merges.txt` into `directory`."""
    byte_to_char = bytes_to_unicode()

    def written(data: bytes) -> str:
        return "".join(byte_to_char[b] for b in data)

    vocab = {written(data): i for data, i in tokenizer.mergeable_ranks().items()}
    for name, token_id in tokenizer.special_tokens.items():
        if name in vocab:
            raise ValueError(f"special token {name!r} is spelled like ordinary token {vocab[name]}")
        vocab[name] = token_id
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    ordered = dict(sorted(vocab.items(), key=lambda item: item[1]))
    vocab_text = json.dumps(ordered, ensure_ascii=False, indent=0) + "\n"
    write_utf8(out / "vocab.json", vocab_text)
    lines = ["#version: 0.2"]
    lines += [
        f"{written(tokenizer.token_bytes(left))} {written(tokenizer.token_bytes(right))}"
        for left, right, _ in tokenizer.merges
    ]
    write_utf8(out / "merges.txt", "\n".join(lines) + "\n")
