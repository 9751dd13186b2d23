"""The reproduction study: claims of the literature settled by a sequential stopping rule.

    from normlab.study import decide, load_claims, run_study
    summary = run_study("claim-3", Path("docs/reproduction"))

`sequential` is the stopping rule (pure Python), `claims` reads a preset's `claims:` section,
`runner` trains the claims' arms seed by seed through the bench, `table` writes the table of
docs/reproduction.md from the summaries, and `command` is `normlab study`.
"""

from normlab.study.claims import Claim, load_claims
from normlab.study.runner import run_study
from normlab.study.sequential import decide, sequence

__all__ = ["Claim", "decide", "load_claims", "run_study", "sequence"]
