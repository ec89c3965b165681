"""The scrubber on provider text: keys whole, masked, split, hidden by invisible characters, in
headers; and ordinary text left as it is."""

import pytest

from llmbus.shared.secrets import FRAGMENT_CHARS, normalise, scrub, secret_values

# Random, as real keys are; every 4-character window has a capital, so none is an English word.
KEY = "sk-Qx7vLmRtZpWkHcNyBdFgJsTaEoUiMqXeVrYhGbKw4NaPzSd"
# Human-chosen, full of words: what the scrubber must not turn every sentence into stars over.
WORDY_KEY = "sk-test-fake-key-never-logged-0123456789"
INVISIBLE = ["\u200b", "\u200c", "\u200d", "\u2060", "\ufeff", "\u00ad", "\u180e", "\ufe0f"]


def fragments(key: str, length: int = FRAGMENT_CHARS) -> list[str]:
    return [key[i : i + length] for i in range(len(key) - length + 1)]


def leaks(text: str, key: str = KEY) -> list[str]:
    return [piece for piece in fragments(key) if piece in text]


def test_the_test_key_has_no_window_a_word_could_match() -> None:
    assert all(any(c.isupper() for c in piece) for piece in fragments(KEY))


@pytest.mark.parametrize(
    ("echo", "cleaned"),
    [
        (f"Incorrect API key provided: {KEY[:3]}...{KEY[-4:]}.", "Incorrect API key provided: sk-***."),
        (f"Incorrect API key provided: {KEY[:6]}***{KEY[-4:]}", "Incorrect API key provided: sk-***"),
        (f"provided: {KEY[:8]}{'*' * 30}{KEY[-4:]}", "provided: sk-***"),
        (f"key ending in …{KEY[-4:]}", "key ending in ...***"),
        (f"key ending in '{KEY[-4:]}'", "key ending in '***'"),
        (f"key: {KEY[-4:]}, {KEY[20:26]}", "key: ***, ***"),
    ],
)  # fmt: skip
def test_masked_echoes_lose_the_tail_and_the_head(echo: str, cleaned: str) -> None:
    assert scrub(echo, [KEY]) == cleaned


def test_every_fragment_of_four_or_more_goes_wherever_it_stands() -> None:
    for length in (FRAGMENT_CHARS, 5, 9, 17):
        for piece in fragments(KEY, length):
            cleaned = scrub(f"the key (around {piece}) was refused", [KEY])
            assert leaks(cleaned) == [], piece
            assert cleaned.startswith("the key (around ") and cleaned.endswith(") was refused")


@pytest.mark.parametrize("separator", [" ", " / ", "-", ", ", ".", "\n", "_|_"])
def test_a_key_split_into_pieces_loses_every_piece(separator: str) -> None:
    pieces = [KEY[i : i + 5] for i in range(10, 40, 5)]

    cleaned = scrub(f"it reads {separator.join(pieces)} in the middle", [KEY])

    assert leaks(cleaned) == []
    assert cleaned.startswith("it reads ") and cleaned.endswith(" in the middle")


@pytest.mark.parametrize("mark", INVISIBLE)
def test_invisible_characters_inside_the_key_hide_nothing(mark: str) -> None:
    for step in (1, 2, 3, 5):
        hidden = mark.join(KEY[i : i + step] for i in range(0, len(KEY), step))
        tail = mark.join(KEY[-4:])

        cleaned = scrub(f"Incorrect API key provided: {hidden}. Hint: ...{tail}", [KEY])

        assert leaks(cleaned) == [] and mark not in cleaned
        assert cleaned.startswith("Incorrect API key provided: ***")


def test_look_alike_characters_fold_onto_the_key() -> None:
    fullwidth = "".join(chr(ord(c) + 0xFEE0) if c.isalnum() else c for c in KEY[10:30])

    cleaned = scrub(f"presented {fullwidth}", [KEY])

    assert normalise(fullwidth) == KEY[10:30]
    assert cleaned == "presented ***"


def test_headers_in_the_text_lose_the_key_and_unknown_credentials() -> None:
    text = (
        "response headers: {'x-fake-presented-key': '" + KEY + "', 'x-fake-key-hint': '..."
        + KEY[-6:] + "', 'Authorization': 'Bearer tok.en.value', 'x-api-key': 'unknown-cred-9f8e7d',"
        " 'api_key': \"another-one-1a2b3c\", 'retry-after': '2'}"
    )  # fmt: skip

    cleaned = scrub(text, [KEY])

    assert leaks(cleaned) == []
    for secret in ("tok.en.value", "unknown-cred-9f8e7d", "another-one-1a2b3c"):
        assert secret not in cleaned
    assert "'x-fake-presented-key': '***'" in cleaned and "'retry-after': '2'" in cleaned


def test_keys_it_was_not_given_still_go_by_shape() -> None:
    cleaned = scrub("keys sk-proj-abcdef123456, sk-...wxyz. and pk-live-zzzz9999 refused")

    assert cleaned == "keys sk-***, sk-***. and pk-*** refused"


def test_env_vars_named_like_secrets_are_scrubbed_without_being_passed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SOME_PROVIDER_API_KEY", "plain-secret-value-123")
    monkeypatch.setenv("VAULT_TOKEN", "hvs" + KEY[3:])
    monkeypatch.setenv("LLMBUS_NOT_A_SECRET_NAME", "Qm9Zx8Wv7Yu6")

    cleaned = scrub(f"bad plain-secret-value-123 and ...{KEY[-7:]} and Qm9Zx8Wv7Yu6")

    assert "plain-secret-value-123" not in cleaned and leaks(cleaned) == []
    assert "Qm9Zx8Wv7Yu6" in cleaned  # neither named like a secret nor passed: not a key
    assert "plain-secret-value-123" in secret_values()
    assert "Qm9Zx8Wv7Yu6" in secret_values(["Qm9Zx8Wv7Yu6"])


@pytest.mark.parametrize(
    "text",
    [
        "the request failed",
        "Incorrect API key provided. You can find your API key at https://example.com/keys.",
        "The test is fake; it was never logged, and the testing key is not valid.",
        "Send the x-api-key header. Rate limit reached for requests; retry after 20s.",
        "Unsupported parameter: 'max_tokens' is not supported with this model.",
        "context length 8192, requested 9000 tokens (logged at 01:23:45)",
    ],
)
def test_ordinary_text_is_left_alone(text: str) -> None:
    assert scrub(text, [KEY, WORDY_KEY]) == text


def test_a_wordy_key_still_goes_whole_split_and_masked() -> None:
    text = (
        f"bad {WORDY_KEY}; reads {WORDY_KEY[3:12]} {WORDY_KEY[12:24]}; ends ...{WORDY_KEY[-4:]}"
        f"; mask {WORDY_KEY[:7]}****"
    )

    cleaned = scrub(text, [WORDY_KEY])

    assert cleaned == "bad ***; reads *** ***; ends ...***; mask sk-***"
    assert leaks(cleaned, WORDY_KEY) == []


def test_a_long_text_is_scrubbed_throughout() -> None:
    filler = "the provider said no. " * 5000
    text = f"{filler}{KEY[5:25]}{filler}...{KEY[-4:]}"

    cleaned = scrub(text, [KEY])

    assert leaks(cleaned) == []
    assert len(cleaned) == len(text) - 20 - 4 + 2 * len("***")
