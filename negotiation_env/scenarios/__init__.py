"""Scenarios: the dilemmas, personas and persona pairs an episode is about.

>>> from negotiation_env.scenarios import ScenarioBank
>>> bank = ScenarioBank.default()
>>> len(bank.dilemmas("test")) >= 60
True
"""

from negotiation_env.scenarios.dedup import DuplicateIndex, NearDuplicate, find_near_duplicates
from negotiation_env.scenarios.loading import (
    ScenarioBank,
    ScenarioDataError,
    load_dilemmas,
    load_pairs,
    load_personas,
    shipped_data_path,
)
from negotiation_env.scenarios.records import (
    CATEGORIES,
    SPLITS,
    Dilemma,
    Persona,
    PersonaPair,
    Scenario,
    scenario_id,
)

__all__ = [
    "CATEGORIES",
    "SPLITS",
    "Dilemma",
    "DuplicateIndex",
    "NearDuplicate",
    "Persona",
    "PersonaPair",
    "Scenario",
    "ScenarioBank",
    "ScenarioDataError",
    "find_near_duplicates",
    "load_dilemmas",
    "load_pairs",
    "load_personas",
    "scenario_id",
    "shipped_data_path",
]
