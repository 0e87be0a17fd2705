"""The project instances are told they run in: config.yaml's `project`, a stable project
number, the region's and zone's paths, and service accounts' e-mail addresses."""

from __future__ import annotations

from pathlib import Path

import pytest

from homerun.access.project import DEFAULT_PROJECT, Project, check_project_id
from homerun.config import load_settings
from homerun.errors import InvalidSpec


def test_the_number_is_twelve_digits_and_the_same_for_the_same_id() -> None:
    number = Project("my-project").number
    assert len(str(number)) == 12
    assert Project("my-project").number == number  # a hash of the id, not of this run
    assert Project("other-project").number != number
    # Pinned: apps on any machine see the same number for the default project.
    assert Project().number == Project(DEFAULT_PROJECT).number == 834_935_907_916


def test_region_and_zone_as_cloud_run_names_them() -> None:
    project = Project("my-project")
    assert project.region_path == f"projects/{project.number}/regions/local"
    assert project.zone_path == f"projects/{project.number}/zones/local-1"


def test_a_bare_account_name_is_an_address_in_the_project() -> None:
    project = Project("my-project")
    assert project.account_email("api") == "api@my-project.iam.gserviceaccount.com"
    other = "123456789012-compute@developer.gserviceaccount.com"
    assert project.account_email(other) == other


@pytest.mark.parametrize("text", ["ab", "My-Project", "1project", "project-", "a" * 31])
def test_project_ids_google_would_refuse_are_refused(text: str) -> None:
    with pytest.raises(InvalidSpec, match="6-30 lowercase"):
        check_project_id(text)


def test_the_project_setting(tmp_path: Path) -> None:
    assert load_settings(tmp_path).project == DEFAULT_PROJECT
    (tmp_path / "config.yaml").write_text("project: my-project\n")
    assert load_settings(tmp_path).project == "my-project"
    (tmp_path / "config.yaml").write_text("project: My_Project\n")
    with pytest.raises(InvalidSpec, match=r"config\.yaml: project: 'My_Project'"):
        load_settings(tmp_path)
