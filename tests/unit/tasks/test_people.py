"""Tests for people: API keys stored as digests, authentication, roles and the file."""

from __future__ import annotations

import hashlib
import json
import re
import stat
from pathlib import Path

import pytest

from proctor.errors import AuthError, ConfigError
from proctor.tasks.people import People, Person, Role, create_person

KEY_SHAPE = re.compile(r"pk_[0-9a-f]{12}_[A-Za-z0-9_-]{43}")


@pytest.fixture
def people_path(tmp_path: Path) -> Path:
    """Where people.json goes."""
    return tmp_path / "people.json"


@pytest.fixture
def people(people_path: Path) -> People:
    """An empty register of people."""
    return People(people_path)


class TestCreatePerson:
    """A new person comes with a fresh key that is returned and nowhere else."""

    def test_key_shape(self) -> None:
        """The key is pk_, a 12-hex key id, _, and 43 URL-safe characters."""
        person, api_key = create_person("Ann@Example.com ", ["approver"])
        assert KEY_SHAPE.fullmatch(api_key)
        assert api_key.startswith(f"pk_{person.key_id}_")

    def test_person_fields(self) -> None:
        """The email is normalised and roles parsed from names."""
        person, _ = create_person(" Ann@Example.COM", ["approver", Role.ADMIN])
        assert person.email == "ann@example.com"
        assert person.roles == {Role.APPROVER, Role.ADMIN}
        assert person.created.endswith("Z")

    def test_keys_are_unique(self) -> None:
        """Two people never share a key or a key id."""
        (first, first_key), (second, second_key) = (
            create_person("a@example.com", ["auditor"]),
            create_person("b@example.com", ["auditor"]),
        )
        assert first_key != second_key
        assert first.key_id != second.key_id

    def test_repr_holds_no_key(self) -> None:
        """A person's repr lacks the key's secret part."""
        person, api_key = create_person("a@example.com", ["auditor"])
        assert api_key.split("_", 2)[2] not in repr(person)


class TestAdd:
    """Adding stores the person with only the digest of their key."""

    def test_key_not_stored(self, people: People, people_path: Path) -> None:
        """people.json holds the SHA-256 of the key and not the key itself."""
        api_key = people.add("ann@example.com", ["approver"])
        raw = people_path.read_text(encoding="utf-8")
        assert api_key not in raw
        assert api_key.split("_", 2)[2] not in raw
        record = json.loads(raw)["people"]["ann@example.com"]
        assert record["key_sha256"] == hashlib.sha256(api_key.encode()).hexdigest()

    def test_file_format_and_mode(self, people: People, people_path: Path) -> None:
        """The file is private and in the documented format."""
        people.add("ann@example.com", ["approver", "auditor"])
        assert stat.S_IMODE(people_path.stat().st_mode) == 0o600
        document = json.loads(people_path.read_text(encoding="utf-8"))
        assert document["format"] == "proctor-people/1"
        record = document["people"]["ann@example.com"]
        assert set(record) == {"roles", "approves", "key_id", "key_sha256", "created"}
        assert record["roles"] == ["approver", "auditor"]
        assert record["approves"] == []

    def test_named_approval_roles(self, people: People) -> None:
        """A named approver fills the policy roles given, and only as an approver."""
        key = people.add("cfo@example.com", ["approver"], ["cfo"])
        auditor_key = people.add("aud@example.com", ["auditor"], ["cfo"])
        cfo = people.authenticate(key)

        assert cfo.may_approve("cfo")
        assert not cfo.may_approve("controller")
        assert not people.authenticate(auditor_key).may_approve("cfo")

    def test_malformed_approval_role(self, people: People) -> None:
        """An approval role must be a short lowercase name."""
        with pytest.raises(AuthError, match="must be a short lowercase name"):
            people.add("x@example.com", ["approver"], ["Not A Role"])

    def test_duplicate_email(self, people: People) -> None:
        """The same address, in any case, cannot be added twice."""
        people.add("ann@example.com", ["approver"])
        with pytest.raises(AuthError, match=r"ann@example\.com already exists"):
            people.add("ANN@example.com", ["auditor"])

    @pytest.mark.parametrize("email", ["", "ann", "ann@", "@example.com", "a b@x.io"])
    def test_bad_email(self, people: People, email: str) -> None:
        """Something that is not an address is refused."""
        with pytest.raises(AuthError, match="is not an email address"):
            people.add(email, ["approver"])

    def test_unknown_role(self, people: People) -> None:
        """An unknown role is refused with the valid ones named."""
        with pytest.raises(AuthError, match="unknown role 'owner'; expected approver"):
            people.add("ann@example.com", ["owner"])

    def test_no_role(self, people: People) -> None:
        """A person needs at least one role."""
        with pytest.raises(AuthError, match="at least one role"):
            people.add("ann@example.com", [])


class TestAuthenticate:
    """Only the exact key of a known person authenticates."""

    def test_right_key(self, people: People) -> None:
        """The key returned by add names its person."""
        api_key = people.add("ann@example.com", ["approver"])
        person = people.authenticate(api_key)
        assert person.email == "ann@example.com"
        assert person.has_role(Role.APPROVER)

    def test_wrong_secret(self, people: People) -> None:
        """The right key id with another secret is refused, naming the id only."""
        api_key = people.add("ann@example.com", ["approver"])
        key_id = api_key[3:15]
        forged = f"pk_{key_id}_{'A' * 43}"
        with pytest.raises(AuthError, match=f"api key {key_id} is not valid"):
            people.authenticate(forged)

    def test_one_character_off(self, people: People) -> None:
        """Changing the last character of a valid key breaks it."""
        api_key = people.add("ann@example.com", ["approver"])
        last = "B" if api_key[-1] != "B" else "C"
        with pytest.raises(AuthError, match="is not valid"):
            people.authenticate(api_key[:-1] + last)

    def test_unknown_key(self, people: People) -> None:
        """A well-formed key of nobody is refused like a wrong one."""
        people.add("ann@example.com", ["approver"])
        _, stranger = create_person("eve@example.com", ["admin"])
        with pytest.raises(AuthError, match="is not valid"):
            people.authenticate(stranger)

    def test_no_people_at_all(self, people: People) -> None:
        """With no people.json every key is refused."""
        _, stranger = create_person("eve@example.com", ["admin"])
        with pytest.raises(AuthError, match="is not valid"):
            people.authenticate(stranger)

    def test_secret_of_another_person(self, people: People) -> None:
        """One person's key id with another person's secret is refused."""
        ann = people.add("ann@example.com", ["approver"])
        bob = people.add("bob@example.com", ["approver"])
        with pytest.raises(AuthError, match="is not valid"):
            people.authenticate(ann[:16] + bob[16:])

    @pytest.mark.parametrize(
        "api_key", ["", "pk_", "Bearer pk_x", "pk_zzzzzzzzzzzz_" + "A" * 43, "sk_live"]
    )
    def test_malformed(self, people: People, api_key: str) -> None:
        """Keys not shaped like pk_<id>_<secret> are refused without echo."""
        with pytest.raises(AuthError, match="api key is malformed") as caught:
            people.authenticate(api_key)
        if len(api_key) > len("pk_"):
            assert api_key not in str(caught.value)

    def test_role_required(self, people: People) -> None:
        """A required role the person lacks is refused; admin implies nothing."""
        api_key = people.add("ann@example.com", ["admin"])
        assert people.authenticate(api_key, role=Role.ADMIN).email == "ann@example.com"
        with pytest.raises(
            AuthError, match=r"ann@example\.com lacks the approver role"
        ):
            people.authenticate(api_key, role=Role.APPROVER)

    def test_sees_people_added_elsewhere(self, people_path: Path) -> None:
        """A register reads people added through another instance."""
        reader = People(people_path)
        reader.list()
        api_key = People(people_path).add("ann@example.com", ["auditor"])
        assert reader.authenticate(api_key).email == "ann@example.com"


class TestRotateAndRemove:
    """A key can be replaced or a person removed, and old keys stop working."""

    def test_rotate(self, people: People) -> None:
        """After rotation the old key fails and the new one works."""
        old = people.add("ann@example.com", ["approver"])
        created = people.get("ann@example.com").created
        new = people.rotate_key("ann@example.com")
        with pytest.raises(AuthError, match="is not valid"):
            people.authenticate(old)
        person = people.authenticate(new)
        assert (person.roles, person.created) == (frozenset({Role.APPROVER}), created)

    def test_remove(self, people: People) -> None:
        """A removed person's key fails and they are gone from the list."""
        api_key = people.add("ann@example.com", ["approver"])
        people.add("bob@example.com", ["auditor"])
        people.remove("Ann@example.com")
        with pytest.raises(AuthError, match="is not valid"):
            people.authenticate(api_key)
        assert [p.email for p in people.list()] == ["bob@example.com"]

    def test_unknown(self, people: People) -> None:
        """Rotating or removing nobody is refused."""
        with pytest.raises(AuthError, match=r"no person nobody@example\.com"):
            people.rotate_key("nobody@example.com")
        with pytest.raises(AuthError, match=r"no person nobody@example\.com"):
            people.remove("nobody@example.com")


class TestListAndGet:
    """People are listed by email and found by any case of it."""

    def test_list(self, people: People) -> None:
        """list() returns everyone sorted by email."""
        people.add("zed@example.com", ["auditor"])
        people.add("ann@example.com", ["approver"])
        assert [p.email for p in people.list()] == [
            "ann@example.com",
            "zed@example.com",
        ]

    def test_get(self, people: People) -> None:
        """get() normalises the address it is given."""
        people.add("ann@example.com", ["approver"])
        person = people.get(" ANN@example.com")
        assert isinstance(person, Person)
        assert person.roles == {Role.APPROVER}

    def test_get_unknown(self, people: People) -> None:
        """An unknown address is an AuthError."""
        with pytest.raises(AuthError, match=r"no person ann@example\.com"):
            people.get("ann@example.com")


class TestFile:
    """A people.json that is open to others or malformed is not trusted."""

    def test_group_readable_refused(self, people: People, people_path: Path) -> None:
        """A file opened to the group is a ConfigError, not an authentication."""
        api_key = people.add("ann@example.com", ["approver"])
        people_path.chmod(0o640)
        with pytest.raises(ConfigError, match="open to group or others"):
            People(people_path).authenticate(api_key)

    @pytest.mark.parametrize(
        ("content", "message"),
        [
            ("{", "is not valid JSON"),
            ('{"format": "other"}', "not a proctor-people/1 file"),
            ('{"format": "proctor-people/1"}', "has no people object"),
            (
                '{"format": "proctor-people/1", "people": {"a@b.io": 1}}',
                "not an object",
            ),
            (
                '{"format": "proctor-people/1", "people": {"a@b.io": {"roles": []}}}',
                "lacks roles, key id or digest",
            ),
            (
                '{"format": "proctor-people/1", "people": {"a@b.io": {"roles": ["x"],'
                ' "key_id": "k", "key_sha256": "d", "created": "c"}}}',
                "unknown role 'x'",
            ),
        ],
    )
    def test_malformed(self, people_path: Path, content: str, message: str) -> None:
        """Each structural fault is a ConfigError saying what is wrong."""
        people_path.write_text(content, encoding="utf-8")
        people_path.chmod(0o600)
        with pytest.raises(ConfigError, match=message):
            People(people_path).list()
