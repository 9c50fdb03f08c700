"""The demo's simulated users: the population its settings ask for (the run itself: tests/loop)."""

from __future__ import annotations

from trimtab.app.demo.records import Clock
from trimtab.app.demo.users import SimulatedUsers
from trimtab.config.demo import DemoUsersConfig
from trimtab.simulation.world import default_world


def test_the_demos_adversarial_share_and_noise_override_the_worlds_population() -> None:
    world = default_world()
    assert world.config.users.adversarial_share == 0.0
    users = SimulatedUsers(DemoUsersConfig(adversarial_share=0.1, noise=0.2), world, "unused", "unused", Clock())
    population = users.population.users
    assert sum(user.adversarial for user in population) == round(0.1 * len(population)) > 0
    assert abs(sum(user.noise for user in population) / len(population) - 0.2) < 0.05
