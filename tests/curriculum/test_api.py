"""Curriculum endpoints as a GPT calls them: scopes, filters, pagination, compact answers."""

from __future__ import annotations

from litestar import Litestar
from litestar.testing import AsyncTestClient

from api.curriculum.loader import LoadReport
from tests.utils.embedder import LocalEmbedder
from tests.utils.oauth import issue_test_token

Client = AsyncTestClient[Litestar]


async def test_standards_need_a_token_with_curriculum_read(
    client: Client, app: Litestar, curriculum: LoadReport
) -> None:
    anonymous = await client.get("/api/v1/curriculum/standards/M707")
    assert anonymous.status_code == 401
    assert anonymous.headers["www-authenticate"].startswith("Bearer")
    memories_only = await issue_test_token(app, scopes=["memories:read"])
    refused = await client.get("/api/v1/curriculum/standards/M707", headers=memories_only.headers)
    assert refused.status_code == 403
    assert "curriculum:read" in refused.json()["detail"]


async def test_a_standard_is_found_by_its_official_code(
    client: Client, teacher_headers: dict[str, str], curriculum: LoadReport
) -> None:
    response = await client.get("/api/v1/curriculum/standards/M707", headers=teacher_headers)
    assert response.status_code == 200
    body = response.json()
    assert body["text"] == "Adds/subtracts algebraic expressions"
    assert (body["class"], body["subject"], body["kind"], body["official_code"]) == (
        7,
        "Mathematics",
        "outcome",
        True,
    )
    assert body["sources"]
    assert "topics" not in body  # an outcome has none; omitted
    chapter = (await client.get("/api/v1/curriculum/standards/jemh109", headers=teacher_headers)).json()
    assert (chapter["topics"], chapter["topics_source"]) == (
        ["Heights and Distances"],
        "ai_chatbot_ncert_text",
    )
    missing = await client.get("/api/v1/curriculum/standards/NOPE42", headers=teacher_headers)
    assert missing.status_code == 404
    assert "NOPE42" in missing.json()["detail"]


async def test_boards_classes_subjects_and_chapters_are_listed(
    client: Client, teacher_headers: dict[str, str], curriculum: LoadReport
) -> None:
    boards = (await client.get("/api/v1/curriculum/boards", headers=teacher_headers)).json()["items"]
    assert {b["code"] for b in boards} == {"NCERT", "CBSE"}
    classes = (await client.get("/api/v1/curriculum/classes", headers=teacher_headers)).json()["items"]
    assert [c["class"] for c in classes] == list(range(1, 13)) or {1, 10, 12} <= {c["class"] for c in classes}
    subjects = (await client.get("/api/v1/curriculum/subjects?class=10", headers=teacher_headers)).json()[
        "items"
    ]
    assert "Science" in {s["name"] for s in subjects}
    chapters = await client.get(
        "/api/v1/curriculum/chapters", params={"class": 10, "subject": "science"}, headers=teacher_headers
    )
    assert chapters.status_code == 200
    items = chapters.json()["items"]
    assert items[0] == {
        "code": "jesc101",
        "number": 1,
        "title": items[0]["title"],
        "book": items[0]["book"],
        "topics": items[0]["topics"],
    }
    assert "Balanced Chemical Equations" in items[0]["topics"]
    assert [c["number"] for c in items] == sorted(c["number"] for c in items)
    none = await client.get(
        "/api/v1/curriculum/chapters", params={"class": 1, "subject": "chemistry"}, headers=teacher_headers
    )
    assert none.status_code == 404


async def test_browsing_with_filters_pages_through_everything_once(
    client: Client, teacher_headers: dict[str, str], curriculum: LoadReport
) -> None:
    seen: list[str] = []
    cursor = None
    while True:
        params = {"class": 7, "subject": "mathematics", "limit": 7} | ({"cursor": cursor} if cursor else {})
        page = (
            await client.get("/api/v1/curriculum/standards", params=params, headers=teacher_headers)
        ).json()
        assert all(item["class"] == 7 and item["subject"] == "Mathematics" for item in page["items"])
        seen += [item["code"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == len(set(seen)) > 7
    assert "M707" in seen


async def test_search_without_serving_falls_back_to_text_ranking(
    client: Client, teacher_headers: dict[str, str], curriculum: LoadReport
) -> None:
    response = await client.get(
        "/api/v1/curriculum/standards", params={"q": "French Revolution"}, headers=teacher_headers
    )
    assert response.status_code == 200
    body = response.json()
    assert body["search_mode"] == "text"
    assert body["items"][0]["code"] == "iess301"
    assert body["items"][0]["score"] > 0


async def test_bad_parameters_are_422_with_the_reason(
    client: Client, teacher_headers: dict[str, str], curriculum: LoadReport
) -> None:
    for params in ({"class": 13}, {"limit": 500}, {"kind": "poem"}, {"cursor": "!!not-ours"}):
        response = await client.get("/api/v1/curriculum/standards", params=params, headers=teacher_headers)
        assert response.status_code == 422, params
        assert response.json()["detail"], params


async def test_the_largest_page_stays_far_below_the_gpt_actions_limit(
    client: Client, teacher_headers: dict[str, str], curriculum: LoadReport
) -> None:
    response = await client.get("/api/v1/curriculum/standards", params={"limit": 50}, headers=teacher_headers)
    assert response.status_code == 200
    assert len(response.json()["items"]) == 50
    assert len(response.text) < 100_000 / 4


async def test_a_search_embeds_an_unseen_query_once_and_says_which_topic_matched(
    client: Client, app: Litestar, teacher_headers: dict[str, str], curriculum: LoadReport
) -> None:
    embedder = LocalEmbedder()
    serving, app.state.serving = app.state.serving, embedder
    try:
        params = {"q": "finding the height of a tower from the angle of elevation", "limit": 3}
        first = await client.get("/api/v1/curriculum/standards", params=params, headers=teacher_headers)
        again = await client.get("/api/v1/curriculum/standards", params=params, headers=teacher_headers)
    finally:
        app.state.serving = serving
    assert first.status_code == again.status_code == 200
    assert embedder.calls == 1  # the second search takes the cached embedding
    body = first.json()
    assert body["search_mode"] == "hybrid"
    assert (body["items"][0]["code"], body["items"][0]["matched_topic"]) == (
        "jemh109",
        "Heights and Distances",
    )
    assert again.json()["items"] == body["items"]
