"""The capacity planner: packs VM demands onto hosts offline (heuristics, column generation,
local search and an exact MIP, within a time limit and with a proven lower bound), measures the
online scheduler's policy on the same data, and plans on a live cluster (`cluster`): headroom,
hosts needed, consolidation and balancing moves. See README.md."""
from vdcos.planner.exact import Plan, lower_bound, solve
from vdcos.planner.heuristics import first_fit, online, portfolio
from vdcos.planner.problem import Packing, Problem, ProblemError, check, load_vbp

__all__ = ["Packing", "Plan", "Problem", "ProblemError", "check", "first_fit", "load_vbp", "lower_bound", "online",
           "portfolio", "solve"]
