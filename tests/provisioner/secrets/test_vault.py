"""Encrypted columns and key rotation, on SQLite and PostgreSQL."""

from __future__ import annotations

import base64

import pytest
from sqlalchemy import select, text
from sqlalchemy.orm import Session, sessionmaker

from provisioner.models import AuthKind, Container, Node
from provisioner.secrets import vault
from provisioner.secrets.box import SecretBox, SecretError, generate_key
from provisioner.secrets.generate import generate_password


def key(text_key: str) -> bytes:
    return base64.urlsafe_b64decode(text_key + "=" * (-len(text_key) % 4))


def test_secrets_round_trip_and_rotation(factory: sessionmaker[Session]) -> None:
    old_key, new_key = key(generate_key()), key(generate_key())
    old_box = SecretBox([old_key])
    token_secret, root_pw = "4c1a1e9b-1c3d-4b7e-9a2f-5d6e7f809a1b", generate_password()
    with factory() as session:
        node = Node(name="pve1", host="127.0.0.2", pve_node="pve", auth_kind=AuthKind.TOKEN,
                    pve_user="root@pam", token_name="prov", secret_ciphertext="")  # fmt: skip
        vault.set_node_secret(old_box, node, token_secret)
        session.add(node)
        session.flush()
        ct = Container(id="0b5c2a52-5b7a-4c55-8a43-5f0c7d6c1e11", node_id=node.id,
                       template="nginx", hostname="web1")  # fmt: skip
        vault.set_container_secrets(old_box, ct, root_password=root_pw, ssh_private_key="KEY" * 20)
        ct.request = {"secret_variables": {
            "db_password": old_box.encrypt("var secret", vault.variable_aad(ct.id, "db_password"))}}  # fmt: skip
        session.add(ct)
        session.commit()
        raw = session.execute(text("SELECT secret_ciphertext FROM nodes")).scalar_one()
        assert token_secret not in raw and raw.startswith("v1:")

    # both keys known, the new one current: old ciphertexts still read
    both = SecretBox([new_key, old_key])
    with factory() as session:
        node = session.scalars(select(Node)).one()
        assert vault.node_secret(both, node) == token_secret
        report = vault.rotate_all(session, both)
        assert (report.reencrypted, report.current) == (4, 0)
        session.commit()
    with factory() as session:
        node = session.scalars(select(Node)).one()
        ct = session.scalars(select(Container)).one()
        assert not both.needs_rotation(node.secret_ciphertext)
        assert vault.rotate_all(session, both) == vault.RotationReport(reencrypted=0, current=4)
        # the old key alone can no longer read anything: it may be retired
        with pytest.raises(SecretError):
            vault.node_secret(old_box, node)
        only_new = SecretBox([new_key])
        assert vault.node_secret(only_new, node) == token_secret
        assert vault.container_root_password(only_new, ct) == root_pw
        assert vault.container_ssh_private_key(only_new, ct) == "KEY" * 20
        token = ct.request["secret_variables"]["db_password"]  # stored, not just in memory
        assert only_new.decrypt(token, vault.variable_aad(ct.id, "db_password")) == "var secret"


def test_a_ciphertext_cannot_move_to_another_row() -> None:
    box = SecretBox([key(generate_key())])
    a = Node(name="a", host="h", pve_node="pve", auth_kind=AuthKind.PASSWORD,
             pve_user="root@pam", secret_ciphertext="")  # fmt: skip
    b = Node(name="b", host="h", pve_node="pve", auth_kind=AuthKind.PASSWORD,
             pve_user="root@pam", secret_ciphertext="")  # fmt: skip
    vault.set_node_secret(box, a, "password-of-a")
    b.secret_ciphertext = a.secret_ciphertext  # copied by an attacker with DB access
    with pytest.raises(SecretError):
        vault.node_secret(box, b)
    assert vault.node_secret(box, a) == "password-of-a"
