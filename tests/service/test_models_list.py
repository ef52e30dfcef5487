"""`/v1/models` tells a newcomer that the presets are randomly initialised, and where to go
for a real model."""

from servicekit import TINY, Team


def test_presets_say_they_are_not_pretrained(team: Team):
    models = {m["id"]: m for m in team.ok(team.get("/v1/models"))["data"]}
    presets = [m for m in models.values() if m["id"].startswith("replayft/")]
    assert TINY in models and len(presets) == 3, list(models)
    for preset in presets:
        assert preset["pretrained"] is False, preset
        assert preset["description"].startswith("Randomly initialised"), preset
        assert "not pretrained" in preset["description"] and "SmolLM2" in preset["description"]
    assert "1.9M parameters" in models[TINY]["description"], models[TINY]
