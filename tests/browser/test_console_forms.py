"""The console's pure parts, with no server and no browser: what its forms and links are read as,
where a login may send the browser back, which POSTs count as the console's own, how a stream's
final usage carries the cost, what a request page may show in each privacy mode; and the wheel
ships every template and static file the pages need."""

import subprocess
import sys
import zipfile
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from llmbus.services.gateway.console import forms
from llmbus.services.gateway.console.app import STATIC
from llmbus.services.gateway.console.dashboard import notice
from llmbus.services.gateway.console.render import sse, when
from llmbus.services.gateway.console.request_log import content_of
from llmbus.services.gateway.console.streams import CostedChunks, error_type
from llmbus.shared.contracts.budget import BudgetExceeded, BudgetThresholdReached
from llmbus.shared.contracts.completion import ErrorType, TokenUsage
from llmbus.shared.contracts.requests import CompletionChunk
from llmbus.shared.prompts.template import ChatTurn, Variable
from llmbus.shared.sections import GatewaySettings

ROOT = Path(__file__).resolve().parents[2]
CONSOLE = ROOT / "services" / "gateway" / "console"
TODAY = date(2026, 3, 9)


def test_a_dashboard_link_without_a_period_shows_the_last_seven_days() -> None:
    chosen = forms.period({"model": " fake-gpt ", "team": ""}, TODAY)
    assert chosen.since == datetime(2026, 3, 3, tzinfo=UTC) and chosen.until is None
    assert chosen.filters == {"model": "fake-gpt"}
    assert chosen.shown("since") == "2026-03-03" and chosen.shown("until") == ""


def test_an_empty_since_is_all_time_and_times_keep_their_zone() -> None:
    chosen = forms.period({"since": "", "until": "2026-03-01T12:30:00+01:00"}, TODAY)
    assert chosen.since is None
    assert chosen.until == datetime(2026, 3, 1, 11, 30, tzinfo=UTC)
    assert forms.moment("since", "2026-03-01T08:00:00") == datetime(2026, 3, 1, 8, tzinfo=UTC)


@pytest.mark.parametrize(
    ("query", "says"),
    [({"since": "last tuesday"}, "since must be a date"),
     ({"since": "2026-03-02", "until": "2026-03-01"}, "until must come after since")],
)  # fmt: skip
def test_a_period_that_cannot_be_read_says_which_field(query: dict[str, str], says: str) -> None:
    with pytest.raises(forms.FormError, match=says):
        forms.period(query, TODAY)


def test_a_cursor_is_a_position_or_nothing() -> None:
    assert forms.cursor({"after": "120"}, "after") == 120
    assert forms.cursor({}, "after") is None
    with pytest.raises(forms.FormError, match="after must be a whole number"):
        forms.cursor({"after": "-1"}, "after")


@pytest.mark.parametrize(
    ("asked", "sent_to"),
    [("/ui/requests?user=ann", "/ui/requests?user=ann"), ("/ui", "/ui"),
     ("https://evil.example/ui", "/ui"), ("//evil.example/ui", "/ui"), ("/uix", "/ui"),
     ("/ui\\..\\x", "/ui"), ("/v1/models", "/ui"), ("", "/ui"), (None, "/ui")],
)  # fmt: skip
def test_a_login_sends_the_browser_back_only_inside_the_console(
    asked: str | None, sent_to: str
) -> None:
    assert forms.safe_next(asked) == sent_to


def test_only_the_consoles_own_pages_may_post() -> None:
    assert forms.same_origin("http://127.0.0.1:4000", "http", "127.0.0.1:4000")
    assert not forms.same_origin("http://evil.example", "http", "127.0.0.1:4000")
    assert not forms.same_origin("https://127.0.0.1:4000", "http", "127.0.0.1:4000")
    assert not forms.same_origin(None, "http", "127.0.0.1:4000")
    behind_a_proxy = ("http", "127.0.0.1:4000", "https://llm.example.com")
    assert forms.same_origin("https://llm.example.com", *behind_a_proxy)
    assert forms.same_origin("http://127.0.0.1:4000", *behind_a_proxy)
    assert not forms.same_origin("https://evil.example", *behind_a_proxy)
    assert not forms.same_origin(None, "http", "127.0.0.1:4000", None)


@pytest.mark.parametrize(
    ("url", "origin"),
    [("https://llm.example.com", "https://llm.example.com"),
     ("https://LLM.example.com:443/", "https://llm.example.com"),
     ("http://10.0.0.5:8080", "http://10.0.0.5:8080"),
     ("https://bücher.example", "https://xn--bcher-kva.example")],
)  # fmt: skip
def test_public_url_is_compared_as_the_origin_a_browser_sends(url: str, origin: str) -> None:
    assert GatewaySettings(public_url=url).public_origin == origin
    assert GatewaySettings().public_origin is None


def test_playground_variables_are_typed_as_declared() -> None:
    declared = [
        Variable(name="text"), Variable(name="words", type="integer"),
        Variable(name="ratio", type="number", required=False),
        Variable(name="loud", type="boolean"), Variable(name="extra", type="json"),
    ]  # fmt: skip
    form = {"var.text": "a <b>", "var.words": "12", "var.ratio": " ", "var.loud": "on",
            "var.extra": '{"k": [1]}'}  # fmt: skip
    assert forms.variables(declared, form) == {
        "text": "a <b>",
        "words": 12,
        "loud": True,
        "extra": {"k": [1]},
    }
    assert forms.variables([Variable(name="loud", type="boolean")], {}) == {"loud": False}
    with pytest.raises(forms.FormError, match="variable 'words' must be integer"):
        forms.variables(declared, form | {"var.words": "twelve"})


def test_a_template_round_trips_through_its_edit_box() -> None:
    turns = [ChatTurn(role="system", content="Be brief."), ChatTurn(role="user", content="{{q}}")]
    assert forms.template_of(forms.template_text(turns), chat=True) == turns
    assert forms.template_of("Hi {{ name }}\r\n", chat=False) == "Hi {{ name }}\n"
    with pytest.raises(forms.FormError, match="JSON list of turns"):
        forms.template_of('{"role": "user"}', chat=True)
    with pytest.raises(forms.FormError, match="must not be empty"):
        forms.template_of("  ", chat=False)


def test_a_version_field_is_a_version_number() -> None:
    assert forms.version({"version": "3"}) == 3
    with pytest.raises(forms.FormError):
        forms.version({"version": "0"})


def test_a_streams_final_usage_carries_its_cost() -> None:
    chunks = CostedChunks("r1", "fake-gpt", 0, include_usage=True)
    final = CompletionChunk(request_id="r1", index=3, final=True, model="fake-gpt",
                            usage=TokenUsage(prompt_tokens=5, completion_tokens=7),
                            cost_usd=0.000019)  # fmt: skip
    closing = chunks.closing(final)
    assert closing[-1]["choices"] == [] and closing[-1]["usage"]["cost_usd"] == 0.000019
    assert closing[0]["choices"][0]["finish_reason"] == "stop"


def test_a_turn_failure_keeps_its_error_type() -> None:
    assert error_type("cancelled") is ErrorType.cancelled
    assert (
        error_type("no-such-type") is ErrorType.internal and error_type(None) is ErrorType.internal
    )


def test_a_request_page_shows_content_only_where_the_privacy_mode_keeps_it() -> None:
    outcome = {"content": "the reply"}
    assert content_of(outcome, "full") == {"content": "the reply", "kept": True}
    assert content_of(outcome, "metadata_only") == {"content": None, "kept": False}


def test_server_sent_events_hold_each_line_of_a_fragment() -> None:
    assert sse("budgets", "<tr>\n<td>a</td>\n</tr>") == (
        b"event: budgets\ndata: <tr>\ndata: <td>a</td>\ndata: </tr>\n\n"
    )
    assert sse("notice", "") == b"event: notice\ndata: \n\n"


def test_budget_events_read_as_notices() -> None:
    at = datetime(2026, 3, 9, 14, 5, 1, tzinfo=UTC)
    reached = BudgetThresholdReached(budget="red", scope={}, window_start=at, threshold=0.8,
                                     spent_usd=0.8, limit_usd=1, mode="soft", request_id="r",
                                     occurred_at=at)  # fmt: skip
    refused = BudgetExceeded(budget="red", scope={}, window_start=at, spent_usd=1,
                             reserved_usd=0, limit_usd=1, requested_usd=0.1, mode="hard",
                             request_id="r9", occurred_at=at)  # fmt: skip
    assert notice(reached) == "14:05:01 · red reached 80% of its limit"
    assert notice(refused) == "14:05:01 · red exceeded its hard limit of $1.00: request r9 refused"
    assert when("2026-03-09T14:05:01.5Z") == "2026-03-09 14:05:01" and when(None) == "\u2013"


def test_the_pages_load_nothing_from_elsewhere() -> None:
    for path in [*CONSOLE.glob("templates/*.html"), *CONSOLE.glob("static/*")]:
        text = path.read_text()
        for needle in ("https://", "http://", "<script>", " style=", "onclick=", "javascript:"):
            allowed = needle == "http://" and "http://www.w3.org/2000/svg" in text
            assert needle not in text or allowed, f"{path.name} holds {needle!r}"


def test_the_wheel_ships_the_consoles_templates_and_static_files(tmp_path: Path) -> None:
    uv = Path(sys.executable).parent / "uv"
    subprocess.run([str(uv), "build", "--wheel", "-q", "-o", str(tmp_path), str(ROOT)], check=True)
    [wheel] = tmp_path.glob("llmbus-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    inside = "llmbus/services/gateway/console"
    templates = {f"{inside}/templates/{p.name}" for p in CONSOLE.glob("templates/*.html")}
    assert templates and templates <= names
    assert {f"{inside}/static/{name}" for name in STATIC} <= names
