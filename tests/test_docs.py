"""The docs say what the code does: the generated configuration reference is current."""

from pathlib import Path

from goalrm.config_reference import config_reference

ROOT = Path(__file__).resolve().parents[1]


def test_configuration_reference_is_current():
    """Regenerate with `python -m goalrm.config_reference > docs/configuration.md`."""
    assert (ROOT / "docs" / "configuration.md").read_text() == config_reference()


def test_configuration_reference_lists_every_key_with_its_comment():
    import dataclasses

    from goalrm.config import Config

    text = config_reference()
    for section in dataclasses.fields(Config):
        for f in dataclasses.fields(getattr(Config(), section.name)):
            assert f"| `{section.name}.{f.name}` |" in text
    assert '| `train.checkpoint_every` | `int` | `0` | steps between checkpoints; 0 = at every eval' in text
    assert "| `loss.sampling.pairing` | `str` | `\"after_last\"` |" in text  # nested sections too
