"""Row ids: UUIDv7 (RFC 9562 section 5.7), so that rows made one after another sort together."""

from __future__ import annotations

import time
import uuid

from mfa.models import new_id


def test_an_id_is_a_uuid_version_7_in_canonical_form():
    made = new_id()
    parsed = uuid.UUID(made)
    assert str(parsed) == made  # lower-case hex, 8-4-4-4-12
    assert parsed.version == 7
    assert parsed.variant == uuid.RFC_4122


def test_an_id_begins_with_the_millisecond_it_was_made_in():
    before = time.time_ns() // 1_000_000
    made = new_id()
    after = time.time_ns() // 1_000_000
    assert before <= int(made.replace("-", "")[:12], 16) <= after


def test_ids_made_in_later_milliseconds_sort_after_and_all_differ():
    first = [new_id() for _ in range(5_000)]
    time.sleep(0.002)
    second = [new_id() for _ in range(5_000)]
    assert max(first) < min(second)
    assert len(set(first + second)) == 10_000
    # 74 random bits: within one millisecond, each one's random part differs too.
    assert len({made[15:] for made in first}) == 5_000
