from pathlib import Path

from devstack.protogen import REPO, generate, generated_tree


def test_generated_stubs_are_up_to_date(tmp_path: Path) -> None:
    """gen/ must be exactly what `make proto` produces from proto/ (run it and commit)."""
    generate(tmp_path)
    assert generated_tree(REPO / "gen") == generated_tree(tmp_path)
