"""Every app in ``examples/`` starts with ``kiln run`` and answers its documented requests."""

from __future__ import annotations

from pathlib import Path

import httpx

from conftest import ADMIN_AUTH, KilnServer, free_port

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def test_the_clinic_serves_its_tables_and_resources(tmp_path: Path) -> None:
    server = KilnServer(EXAMPLES / "clinic", tmp_path / "data", free_port())
    server.start()
    try:
        with httpx.Client(base_url=server.url, auth=ADMIN_AUTH, timeout=10) as http:
            dogs = [
                (1, "lab", "2019-01-01", "o1"),
                (2, "lab", "2021-06-01", "o2"),
                (3, "beagle", "2020-03-01", "o1"),
            ]
            for key, breed, birthday, owner in dogs:
                body = {"name": f"d{key}", "breed": breed, "birthday": birthday, "ownerId": owner}
                assert http.put(f"/Dog/{key}", json=body).status_code == 204
            profile = http.get("/DogProfile/1").json()
            assert profile["name"] == "d1"
            assert profile["ageYears"] >= 6
            assert "ageYears" not in http.get("/Dog/1").json()
            assert http.get("/BreedCounts/").json() == {"lab": 2, "beagle": 1}
            assert http.get("/BreedCounts/?ownerId=o1").json() == {"lab": 1, "beagle": 1}
            assert http.put("/BreedCounts/1", json={"name": "x"}).status_code == 403
        with httpx.Client(base_url=server.url, timeout=10) as anonymous:
            public = anonymous.get("/Dog/1").json()
            assert public == {"id": 1, "name": "d1", "breed": "lab", "birthday": public["birthday"]}
            assert anonymous.get("/DogProfile/1").json()["ageYears"] >= 6
            assert anonymous.get("/BreedCounts/").json() == {"lab": 2, "beagle": 1}
            assert anonymous.get("/Dog/?ownerId=o1").status_code == 401  # ownerId is not public
            assert anonymous.get("/Owner/").status_code == 401
            assert anonymous.put("/Dog/1", json={"name": "x"}).status_code == 401
    finally:
        server.stop()
    assert "Traceback" not in server.log()
