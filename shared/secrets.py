"""Secrets out of provider text: keys whole, masked, split into pieces or hidden by invisible
characters, plus key-shaped tokens, bearer tokens and credential headers of keys we don't know.

Pure: reads the environment for the key values, nothing else. Used on error texts only.
"""

import os
import re
import unicodedata
from collections.abc import Iterable, Mapping
from functools import lru_cache

SECRET_ENV_SUFFIXES = ("_KEY", "_TOKEN", "_SECRET", "_PASSWORD")
# Shorter values (flags, ports, "true") are not secrets worth hunting for fragments of.
MIN_SECRET_CHARS = 6
# A run this long of a key's characters is a fragment of it (OpenAI echoes the last 4).
FRAGMENT_CHARS = 4
REDACTED = "***"

# Render as nothing, so they can sit inside a key unseen: format characters (category Cf:
# zero-width space/joiners, word joiner, BOM, soft hyphen, bidi marks, tag characters), the
# combining grapheme joiner, Hangul fillers and variation selectors.
INVISIBLE_EXTRA = frozenset(
    "\u034f\u115f\u1160\u180b\u180c\u180d\u3164\uffa0"
    + "".join(chr(c) for c in range(0xFE00, 0xFE10))
    + "".join(chr(c) for c in range(0xE0100, 0xE01F0))
)

# On normalised text: NFKC has turned "…" into "...".
KEY_LIKE = re.compile(r"\b(sk|pk|rk)-(?=[\w.*-]*[A-Za-z0-9]{4})[\w.*-]*[\w*]")
BEARER = re.compile(r"(?i)\bbearer\s+[^\s\"']+")
CREDENTIAL_FIELD = re.compile(
    r"(?i)\b(authorization|x-api-key|api[-_]key|x-goog-api-key|cookie)"
    r"([\"']?\s*[:=]\s*[\"']?)(?!bearer\b)[^\s\"',;}]+"
)
WORD = re.compile(r"[a-z]+|[A-Z][a-z]+|[A-Z]+")
VOWEL = re.compile(r"[aeiouAEIOU]")
MASK_BEFORE = re.compile(r"(\*|\.\.\.)\s*$")
MASK_AFTER = re.compile(r"^\s*(\*|\.\.\.)")


def secret_values(
    extra: Iterable[str | None] = (), env: Mapping[str, str] = os.environ
) -> list[str]:
    """Values of env vars named like secrets, plus `extra` (e.g. keys the catalog names)."""
    values = [v for k, v in env.items() if k.upper().endswith(SECRET_ENV_SUFFIXES)]
    values += [v for v in extra if v]
    normalised = {normalise(v) for v in values}
    # Longest first, so a key that contains a shorter secret is still removed whole.
    return sorted((v for v in normalised if len(v) >= MIN_SECRET_CHARS), key=len, reverse=True)


def scrub(text: str, extra: Iterable[str | None] = ()) -> str:
    """`text` normalised (NFKC, invisible characters dropped) and without secrets.

    The result is normalised rather than mapped back to the original characters: it is an error
    message for people to read, and a zero-width space in it only ever hides something.
    """
    keys = secret_values(extra)
    text = normalise(text)
    for key in keys:
        text = text.replace(key, REDACTED)
    # Shapes first, so a key we don't know goes whole (sk-***) rather than in pieces.
    text = KEY_LIKE.sub(rf"\1-{REDACTED}", text)
    text = BEARER.sub(f"Bearer {REDACTED}", text)
    text = CREDENTIAL_FIELD.sub(lambda m: f"{m.group(1)}{m.group(2)}{REDACTED}", text)
    return scrub_fragments(text, tuple(keys))


def normalise(text: str) -> str:
    if text.isascii():
        return text  # no invisible characters, and NFKC leaves ASCII as it is
    # NFKC folds look-alikes (fullwidth letters, ligatures) onto the characters keys are made of.
    return unicodedata.normalize("NFKC", "".join(ch for ch in text if not invisible(ch)))


def invisible(ch: str) -> bool:
    return ch in INVISIBLE_EXTRA or unicodedata.category(ch) == "Cf"


def scrub_fragments(text: str, keys: tuple[str, ...]) -> str:
    """Replace each run of text made of key fragments, unless it is harmless.

    The rule: every FRAGMENT_CHARS-character window of the text that also occurs in a key is key
    material; overlapping or touching windows form one run, and each run is replaced. So the tail
    of `sk-...wxyz`, each piece of a key split by spaces or punctuation, and the key itself all
    go. One exception keeps error texts readable when a key holds ordinary words (a human-chosen
    key such as `sk-test-key-...`): a run is kept when, without the punctuation at its ends, it
    is letters that lie inside an ordinary word of the text (letters only, cased like prose, with
    a vowel: the `-key` of `x-api-key`, the `test` of `testing`), unless a mask (`*`, `...`)
    touches it. Masked echoes are thus always scrubbed; a random key rarely holds such a run,
    and one standing alone gives away a few characters of it at most.

    One set lookup per character of text: linear in the text and in the total key length.
    """
    grams = key_grams(keys)
    if not grams:
        return text
    pieces: list[str] = []
    done = 0
    for start, end in key_runs(text, grams):
        if harmless(text, start, end):
            continue
        pieces += [text[done:start], REDACTED]
        done = end
    return "".join(pieces) + text[done:]


@lru_cache(maxsize=16)
def key_grams(keys: tuple[str, ...]) -> frozenset[str]:
    return frozenset(
        key[i : i + FRAGMENT_CHARS] for key in keys for i in range(len(key) - FRAGMENT_CHARS + 1)
    )


def key_runs(text: str, grams: frozenset[str]) -> list[tuple[int, int]]:
    runs: list[tuple[int, int]] = []
    for i in range(len(text) - FRAGMENT_CHARS + 1):
        if text[i : i + FRAGMENT_CHARS] not in grams:
            continue
        if runs and i <= runs[-1][1]:
            runs[-1] = (runs[-1][0], i + FRAGMENT_CHARS)
        else:
            runs.append((i, i + FRAGMENT_CHARS))
    return runs


def harmless(text: str, start: int, end: int) -> bool:
    if MASK_BEFORE.search(text[max(0, start - 4) : start]) or MASK_AFTER.match(text[end : end + 8]):
        return False
    while start < end and not text[start].isalnum():
        start += 1
    while end > start and not text[end - 1].isalnum():
        end -= 1
    return inside_a_word(text, start, end)


def inside_a_word(text: str, start: int, end: int) -> bool:
    if start == end or not text[start:end].isalpha():
        return False
    while start > 0 and text[start - 1].isalnum():
        start -= 1
    while end < len(text) and text[end].isalnum():
        end += 1
    word = text[start:end]
    return bool(WORD.fullmatch(word) and VOWEL.search(word))
