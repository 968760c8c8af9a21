"""Relate: tie events to the runs, tasks, tries, blocks and hosts they belong to.

The entry point ingest calls after moving events into the store. The relations themselves are
data (`taskscope/relations/parsl.toml` and a user's `--relations` files), compiled to SQL and
applied to a fixpoint by `taskscope.relations.engine`; see there for the built-in steps, the
scoping to the runs an ingest read, and why each step materialises what it learned first.
"""

from __future__ import annotations

from taskscope.relations import Relation, RelationError, load_relations
from taskscope.relations.engine import MAX_ROUNDS, RelateReport, coverage, relate

__all__ = ["MAX_ROUNDS", "RelateReport", "Relation", "RelationError", "coverage", "load_relations", "relate"]
