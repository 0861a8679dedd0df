"""Queries through ``@relationship`` over HTTP: dot-path conditions, nested selections, sort.

Every test writes its own owners, dogs and tags under names of its own. The
server does not allow full scans: a dot-path condition alone is driven as a join
(``ownerId``, ``tagIds``, ``Owner.name``, ``Dog.kennel`` and ``Tag.label`` are
indexed), or refused when it goes through ``sitterId`` or ``Owner.city``.
"""

from __future__ import annotations

import httpx

SCHEMA = """
type Owner @table @export {
  id: ID @primaryKey
  name: String @indexed
  city: String
  dogs: [Dog] @relationship(to: ownerId)
}
type Dog @table @export {
  id: Int @primaryKey
  name: String
  kennel: String @indexed
  ownerId: ID @indexed
  owner: Owner @relationship(from: ownerId)
  sitterId: ID
  sitter: Owner @relationship(from: sitterId)
  tagIds: [ID] @indexed
  tags: [Tag] @relationship(from: tagIds)
}
type Tag @table @export {
  id: ID @primaryKey
  label: String @indexed
}
"""


def put(http: httpx.Client, path: str, record: dict[str, object]) -> None:
    response = http.put(path, json=record)
    assert response.status_code == 204, response.text


def seed(http: httpx.Client, tag: str, first: int) -> str:
    """Owners ``{tag}-ann`` (Oslo), ``{tag}-bob`` (Rome), ``{tag}-cy`` (no dogs); dogs from
    ``first``: +0, +1 of ann, +2 of bob, +3 of a missing owner, +4 of none; kennel ``tag``."""
    put(http, f"/Owner/{tag}-ann", {"name": f"{tag} Ann", "city": "Oslo"})
    put(http, f"/Owner/{tag}-bob", {"name": f"{tag} Bob", "city": "Rome"})
    put(http, f"/Owner/{tag}-cy", {"name": f"{tag} Cy"})
    put(http, f"/Tag/{tag}-good", {"label": f"{tag} good"})
    put(http, f"/Tag/{tag}-old", {"label": f"{tag} old"})
    dogs = [
        {"name": "Rex", "ownerId": f"{tag}-ann", "tagIds": [f"{tag}-old", "gone", f"{tag}-good"]},
        {"name": "Fido", "ownerId": f"{tag}-ann", "tagIds": [f"{tag}-good"]},
        {"name": "Max", "ownerId": f"{tag}-bob", "tagIds": []},
        {"name": "Lost", "ownerId": f"{tag}-gone"},
        {"name": "Stray"},
    ]
    for offset, dog in enumerate(dogs):
        put(http, f"/Dog/{first + offset}", {**dog, "kennel": tag})
    return tag


def ids(response: httpx.Response) -> list[object]:
    assert response.status_code == 200, response.text
    return [record["id"] for record in response.json()]


# --------------------------------------------------------------------------- conditions


def test_a_condition_through_a_to_one_relationship_is_an_inner_join(http: httpx.Client) -> None:
    tag = seed(http, "c1", 100)
    assert ids(http.get(f"/Dog/?owner.name={tag}%20Ann")) == [100, 101]
    assert ids(http.get(f"/Dog/?owner.city=Rome&kennel={tag}")) == [102]
    # no owner (104) or an owner key without a record (103): never a match, not even for `!=`
    assert ids(http.get(f"/Dog/?kennel={tag}&owner.name!={tag}%20Ann")) == [102]
    assert ids(http.get(f"/Dog/?kennel={tag}&owner.city=null")) == []
    either = http.get(f"/Dog/?kennel={tag}&(owner.name={tag}%20Bob|name=Fido)")
    assert ids(either) == [101, 102]
    counted = http.get(f"/Dog/?owner.name={tag}%20Ann&limit(1)", headers={"prefer": "count=exact"})
    assert ids(counted) == [100]
    assert counted.headers["content-range"] == "items 0-0/2"


def test_a_condition_through_a_list_matches_when_any_related_record_matches(
    http: httpx.Client,
) -> None:
    tag = seed(http, "c2", 200)
    # one-to-many: the owners with a dog named Max
    assert ids(http.get(f"/Owner/?name=sw={tag}&dogs.name=Max")) == [f"{tag}-bob"]
    assert ids(http.get(f"/Owner/?name=sw={tag}&dogs.name=sw=")) == [f"{tag}-ann", f"{tag}-bob"]
    # many-to-many through the list of keys
    assert ids(http.get(f"/Dog/?tags.label={tag}%20good")) == [200, 201]
    assert ids(http.get(f"/Dog/?kennel={tag}&tags.label={tag}%20old")) == [200]


def test_a_dot_path_drives_as_a_join_when_it_is_the_smaller_candidate(
    http: httpx.Client,
) -> None:
    tag = seed(http, "c3", 300)
    report = http.get(f"/Dog/?kennel={tag}&owner.name={tag}%20Ann&explain()").json()
    assert report["driver"] == {
        "attribute": "ownerId",
        "comparator": "in",
        "range": "1 key joined through `owner.name`",
        "join": {
            "relationship": "owner",
            "table": "Owner",
            "attribute": "name",
            "comparator": "eq",
            "range": f'["{tag} Ann", "{tag} Ann"]',
            "keys": 1,
        },
    }
    assert report["estimated"] == 2
    assert report["filters"] == [{"attribute": "kennel", "comparator": "eq"}]
    assert (report["scanned"], report["returned"], report["fullScan"]) == (2, 2, False)
    # the three owners of this seed have three dogs; the key 302 has one
    wide = http.get(f"/Dog/?id=302&owner.name=sw={tag}&explain()").json()
    assert wide["driver"]["attribute"] == "id"
    assert wide["filters"] == [{"attribute": "owner.name", "comparator": "sw"}]
    assert wide["returned"] == 1


def test_each_join_shape_answers_alone_without_full_scans(http: httpx.Client) -> None:
    tag = seed(http, "j1", 900)
    shapes = [
        ("Dog", f"owner.name={tag}%20Ann", [900, 901]),  # many-to-one
        ("Dog", f"owner.id={tag}-bob", [902]),  # the related primary key
        ("Dog", f"tags.label={tag}%20old", [900]),  # many-to-many
        ("Owner", f"dogs.kennel={tag}", [f"{tag}-ann", f"{tag}-bob"]),  # one-to-many
        ("Owner", f"dogs.kennel={tag}&dogs.name=Max", [f"{tag}-bob"]),
    ]
    for table, query, expected in shapes:
        assert ids(http.get(f"/{table}/?{query}")) == expected, query
        report = http.get(f"/{table}/?{query}&explain()").json()
        assert report["fullScan"] is False and "join" in report["driver"], report
    one_to_many = http.get(f"/Owner/?dogs.kennel={tag}&explain()").json()
    # ann, bob and the missing `gone` owner of dog 903: three keys, two records
    assert one_to_many["driver"]["attribute"] == "id"
    assert one_to_many["driver"]["join"]["keys"] == 3
    assert one_to_many["returned"] == 2


def test_joins_with_or_sort_limit_and_count(http: httpx.Client) -> None:
    tag = seed(http, "j2", 1000)
    either = f"owner.name={tag}%20Ann|owner.name={tag}%20Bob"
    assert ids(http.get(f"/Dog/?{either}")) == [1000, 1001, 1002]
    assert ids(http.get(f"/Dog/?owner.name={tag}%20Bob|tags.label={tag}%20good")) == [
        1000,
        1001,
        1002,
    ]
    assert ids(http.get(f"/Dog/?[{either}]&sort(-id)&limit(1,3)")) == [1001, 1000]
    assert ids(http.get(f"/Dog/?owner.name=sw={tag}&sort(-owner.name,id)")) == [
        1002,
        1000,
        1001,
    ]
    counted = http.get(f"/Dog/?owner.name=sw={tag}&limit(0,2)", headers={"prefer": "count=exact"})
    assert ids(counted) == [1000, 1001]
    assert counted.headers["content-range"] == "items 0-1/3"
    assert counted.headers["preference-applied"] == "count=exact"
    selected = http.get(f"/Dog/?owner.name={tag}%20Bob&select(name,owner{{city}})").json()
    assert selected == [{"name": "Max", "owner": {"city": "Rome"}}]


def test_a_join_without_matches_and_a_dangling_key(http: httpx.Client) -> None:
    tag = seed(http, "j3", 1100)
    nothing = http.get(f"/Dog/?owner.name={tag}%20Nobody", headers={"prefer": "count=exact"})
    assert ids(nothing) == []
    assert nothing.headers["content-range"] == "items */0"
    assert ids(http.get(f"/Dog/?owner.id={tag}-gone")) == []  # dog 1103's owner has no record
    put(http, f"/Owner/{tag}-gone", {"name": f"{tag} Gus"})
    assert ids(http.get(f"/Dog/?owner.name={tag}%20Gus")) == [1103]
    assert ids(http.get(f"/Owner/?dogs.name=Lost&dogs.kennel={tag}")) == [f"{tag}-gone"]


def test_a_related_record_changed_between_queries(http: httpx.Client) -> None:
    tag = seed(http, "j4", 1200)
    assert ids(http.get(f"/Dog/?owner.city=Rome&owner.name=sw={tag}")) == [1202]
    response = http.patch(f"/Owner/{tag}-bob", json={"name": f"{tag} Ann"})
    assert response.status_code == 204, response.text
    assert ids(http.get(f"/Dog/?owner.name={tag}%20Ann")) == [1200, 1201, 1202]
    response = http.patch("/Dog/1200", json={"ownerId": f"{tag}-cy"})
    assert response.status_code == 204, response.text
    assert ids(http.get(f"/Dog/?owner.name={tag}%20Ann")) == [1201, 1202]
    assert ids(http.get(f"/Owner/?dogs.kennel={tag}&name={tag}%20Cy")) == [f"{tag}-cy"]


def test_a_join_that_cannot_drive_is_a_400_naming_what_to_index(http: httpx.Client) -> None:
    city = http.get("/Dog/?owner.city=Oslo")
    assert city.status_code == 400
    assert "`owner.city`: `city` of Owner is not indexed" in city.json()["detail"]
    assert city.json()["hint"].startswith("add @indexed to `city` in `type Owner`")
    sitter = http.get("/Dog/?sitter.name=Ann")
    assert sitter.status_code == 400
    assert (
        "`sitter.name` joins through `sitterId`, which is not indexed" in (sitter.json()["detail"])
    )
    assert sitter.json()["hint"].startswith("add @indexed to `sitterId` in schema.graphql")
    negated = http.get("/Dog/?owner.name!=Ann")
    assert negated.status_code == 400
    assert "`owner.name` ne cannot use an index" in negated.json()["detail"]
    deleted = http.delete("/Dog/?sitter.name=Ann")
    assert deleted.status_code == 400


def test_delete_by_query_through_a_relationship(http: httpx.Client) -> None:
    tag = seed(http, "c4", 400)
    response = http.delete(f"/Dog/?kennel={tag}&owner.city=Oslo")
    assert response.status_code == 200, response.text
    assert response.json() == {"deleted": 2}
    assert ids(http.get(f"/Dog/?kennel={tag}")) == [402, 403, 404]
    joined = http.delete(f"/Dog/?owner.name={tag}%20Bob")  # driven by the join alone
    assert joined.status_code == 200, joined.text
    assert joined.json() == {"deleted": 1}
    assert ids(http.get(f"/Dog/?kennel={tag}")) == [403, 404]


# --------------------------------------------------------------------------- selections


def test_select_a_to_one_relationship_nests_it_and_a_missing_one_is_null(
    http: httpx.Client,
) -> None:
    tag = seed(http, "s1", 500)
    response = http.get(f"/Dog/?kennel={tag}&select(name,owner{{name,city}})")
    assert response.status_code == 200, response.text
    assert response.json() == [
        {"name": "Rex", "owner": {"name": f"{tag} Ann", "city": "Oslo"}},
        {"name": "Fido", "owner": {"name": f"{tag} Ann", "city": "Oslo"}},
        {"name": "Max", "owner": {"name": f"{tag} Bob", "city": "Rome"}},
        {"name": "Lost", "owner": None},
        {"name": "Stray", "owner": None},
    ]
    whole = http.get(f"/Dog/?kennel={tag}&id=500&select(id,owner)").json()
    assert whole == [
        {"id": 500, "owner": {"id": f"{tag}-ann", "name": f"{tag} Ann", "city": "Oslo"}}
    ]
    assert http.get(f"/Dog/?kennel={tag}&id=502&select(owner)").json() == [
        {"id": f"{tag}-bob", "name": f"{tag} Bob", "city": "Rome"}
    ]
    # not selected: no relationship in the records
    for record in http.get(f"/Dog/?kennel={tag}").json():
        assert "owner" not in record and "tags" not in record


def test_select_a_one_to_many_relationship_gives_a_list(http: httpx.Client) -> None:
    tag = seed(http, "s2", 600)
    response = http.get(f"/Owner/?name=sw={tag}&select(name,dogs{{name}})")
    assert response.status_code == 200, response.text
    assert response.json() == [
        {"name": f"{tag} Ann", "dogs": [{"name": "Rex"}, {"name": "Fido"}]},
        {"name": f"{tag} Bob", "dogs": [{"name": "Max"}]},
        {"name": f"{tag} Cy", "dogs": []},
    ]
    for record in http.get(f"/Owner/?name=sw={tag}").json():
        assert "dogs" not in record


def test_select_a_many_to_many_relationship_keeps_the_key_list_order(http: httpx.Client) -> None:
    tag = seed(http, "s3", 700)
    response = http.get(f"/Dog/?kennel={tag}&select([name,tags{{label}}])")
    assert response.status_code == 200, response.text
    assert response.json() == [
        ["Rex", [{"label": f"{tag} old"}, {"label": f"{tag} good"}]],  # "gone" has no record
        ["Fido", [{"label": f"{tag} good"}]],
        ["Max", []],
        ["Lost", []],
        ["Stray", []],
    ]


# --------------------------------------------------------------------------- sort


def test_sort_by_a_dot_path_puts_nulls_last_and_keeps_ties_in_key_order(
    http: httpx.Client,
) -> None:
    tag = seed(http, "o1", 800)
    put(http, "/Dog/799", {"name": "Early", "kennel": tag, "ownerId": f"{tag}-bob"})
    ascending = ids(http.get(f"/Dog/?kennel={tag}&sort(owner.name)"))
    assert ascending == [800, 801, 799, 802, 803, 804]
    descending = ids(http.get(f"/Dog/?kennel={tag}&sort(-owner.name)"))
    assert descending == [799, 802, 800, 801, 803, 804]
    paged = ids(http.get(f"/Dog/?kennel={tag}&sort(-owner.name,-id)&limit(1,3)"))
    assert paged == [799, 801]


# --------------------------------------------------------------------------- errors


def test_an_unknown_attribute_through_a_relationship_is_a_400_naming_it(
    http: httpx.Client,
) -> None:
    typo = http.get("/Dog/?owner.nmae=Ann")
    assert typo.status_code == 400
    assert "unknown attribute `nmae` of Owner; did you mean `name`?" in typo.json()["detail"]
    relation = http.get("/Dog/?ownr.name=Ann")
    assert relation.status_code == 400
    assert "unknown attribute `ownr` of Dog; did you mean `owner`?" in relation.json()["detail"]
    sort = http.get("/Dog/?kennel=x&sort(owner.cty)")
    assert sort.status_code == 400
    assert "`cty`" in sort.json()["detail"]
    many = http.get("/Owner/?name=x&sort(dogs.name)")
    assert many.status_code == 400
    assert "cannot sort by `dogs.name`" in many.json()["detail"]
    bare = http.get("/Dog/?owner=x")
    assert bare.status_code == 400
    assert "`owner` is a relationship of Dog" in bare.json()["detail"]
