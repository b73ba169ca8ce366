"""Random tunnel names for agents that do not ask for one: easy to read aloud, hard to guess."""

from __future__ import annotations

import secrets

_ADJECTIVES = (
    "amber brave calm clever dusty eager fancy gentle happy icy jolly keen lucky mellow "
    "nimble polite quick rapid shiny silent sunny swift tidy vivid witty young zesty"
).split()
_NOUNS = (
    "badger beacon canyon comet delta falcon forest harbor island lantern meadow otter "
    "panda pebble pine quokka raven river rocket sparrow summit tiger walrus willow zebra"
).split()


def random_name() -> str:
    """Like ``swift-otter-4821``: about 26 bits, plenty for names that are also claimed."""
    adjective = secrets.choice(_ADJECTIVES)
    noun = secrets.choice(_NOUNS)
    return f"{adjective}-{noun}-{secrets.randbelow(10000):04d}"
