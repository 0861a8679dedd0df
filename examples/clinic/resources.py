"""The clinic's Python endpoints, next to the tables schema.graphql exports.

- ``/DogProfile/<id>``: a Dog record with ``ageYears``, computed from ``birthday`` when read.
- ``/BreedCounts/``: how many dogs of each breed, over the dogs a query selects
  (``/BreedCounts/?ownerId=ann``); read-only.
"""

from collections import Counter
from datetime import UTC, datetime

from kiln import tables
from kiln.errors import NotFound


class DogProfile(tables.Dog):
    """Dog records (the same rows as /Dog/) with ``ageYears`` added on read."""

    def get(self, target):
        found = super().get(target)
        if target.is_collection or found is None:
            return found
        birthday = found.get("birthday")
        if birthday is not None:
            found["ageYears"] = (datetime.now(UTC) - birthday).days // 365
        return found


class BreedCounts(tables.Dog):
    """Dogs per breed: ``{"lab": 2, "beagle": 1}``. Writes are refused (403)."""

    def get(self, target):
        if not target.is_collection:
            raise NotFound(f"{target.path} is not a count; the counts are at /BreedCounts/")
        return dict(Counter(dog.get("breed") or "unknown" for dog in super().get(target)))

    def allow_insert(self, target):
        return False

    def allow_update(self, target):
        return False

    def allow_delete(self, target):
        return False
