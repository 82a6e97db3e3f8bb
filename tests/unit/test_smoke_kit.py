"""Every example renders in every environment (the other tests go deeper)."""

from tests.support import example_kit


def test_every_example_renders_every_environment(example: str) -> None:
    kit = example_kit(example)
    assert kit.environments
    for env in kit.environments:
        kinds = {o["kind"] for o in kit.objects[env]}
        assert {"Namespace", "NetworkPolicy", "Deployment"} <= kinds or "StatefulSet" in kinds
