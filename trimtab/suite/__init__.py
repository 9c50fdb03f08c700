"""The evaluation-suite contract (`contract`), the file suite (`files`), scorer entry points (`judge`)
and the loader that picks one by configuration (`load`).

    suite = load_suite(config)            # config.suite.kind: files | world | another plug-in
    suite.heldout, suite.anchors, suite.red_team, suite.protected, suite.judge
"""

from trimtab.suite.contract import Demonstration, EvaluationSuite, Judge, ProtectedTerms, RedTeamPrompt, Scorer
from trimtab.suite.judge import JudgeError, checked, load_scorer
from trimtab.suite.load import ENTRY_POINT_GROUP, SuiteError, load_suite

__all__ = [
    "ENTRY_POINT_GROUP",
    "Demonstration",
    "EvaluationSuite",
    "Judge",
    "JudgeError",
    "ProtectedTerms",
    "RedTeamPrompt",
    "Scorer",
    "SuiteError",
    "checked",
    "load_scorer",
    "load_suite",
]
