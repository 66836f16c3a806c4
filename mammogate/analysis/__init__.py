"""The analysis job: settle studies, claim their jobs, run the model, write and route results.

For each job the study's files are read once (by the analyzer, which returns their headers
with the result); the result objects are built through the registry
(:data:`mammogate.reporting.OBJECT_BUILDERS`) for the kinds the firing routes ask for; and the
analysis, its objects, their delivery rows, the study's new state and the job's completion are
committed in one transaction.
"""

from mammogate.analysis.routes import explain_files, explain_study, route_rules, study_facts
from mammogate.analysis.worker import AnalysisWorker, StudyAnalyzer

__all__ = [
    "AnalysisWorker",
    "StudyAnalyzer",
    "explain_files",
    "explain_study",
    "route_rules",
    "study_facts",
]
