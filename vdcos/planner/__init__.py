"""The capacity planner: packs VM demands onto hosts offline (heuristics + an exact MIP with a
time limit and a proven lower bound), and measures the online scheduler's policy on the same data."""
from vdcos.planner.exact import Plan, lower_bound, solve
from vdcos.planner.heuristics import first_fit, online, portfolio
from vdcos.planner.problem import Packing, Problem, ProblemError, check, load_vbp

__all__ = ["Packing", "Plan", "Problem", "ProblemError", "check", "first_fit", "load_vbp", "lower_bound", "online",
           "portfolio", "solve"]
