"""The AsyncAPI document in schemas/ covers every subject llmbus publishes or answers."""

from typing import Any

from llmbus.shared import subjects
from llmbus.shared.schemas import asyncapi

# named in subjects.py but published by no service yet: streaming is a later capability
NOT_PUBLISHED_YET = {subjects.COMPLETION_CHUNK}


def llmbus_subjects() -> dict[str, str]:
    """Every subject named in shared/subjects.py; wildcards (stream filters) and the prefixes
    of clients' subjects (llmbus.in.<client>.…) are left out."""
    return {
        name: value
        for name, value in vars(subjects).items()
        if name.isupper()
        and not name.endswith("_PREFIX")
        and isinstance(value, str)
        and value.startswith("llmbus.")
        and not value.endswith(">")
    }


def test_every_subject_is_in_the_asyncapi_document() -> None:
    addresses = {c["address"] for c in asyncapi()["channels"].values()}
    missing = {
        name: value
        for name, value in llmbus_subjects().items()
        if value not in addresses and value not in NOT_PUBLISHED_YET
    }
    assert not missing, f"add these to shared/schemas.py CHANNELS, then run make schemas: {missing}"


def test_every_request_reply_subject_documents_its_reply_and_the_error_reply() -> None:
    document = asyncapi()
    for key, operation in document["operations"].items():
        if document["channels"][key]["description"] != "request/reply":
            continue
        replies = {ref["$ref"].rsplit("/", 1)[1] for ref in operation["reply"]["messages"]}
        assert "ErrorReply" in replies and len(replies) == 2, key


def test_every_message_the_document_names_is_defined() -> None:
    document = asyncapi()
    defined = set(document["components"]["messages"])
    for channel in document["channels"].values():
        named: dict[str, Any] = channel["messages"]
        assert {ref["$ref"].rsplit("/", 1)[1] for ref in named.values()} <= defined
