"""Step 3: automatic mixed precision (AMP).

* ``greedy``: the semantics of AIMET's ``choose_mixed_precision``. Phase 1 evaluates, for every quantizer
  group and every candidate other than the baseline (the costliest candidate), the metric with only that
  group at that candidate. Phase 2 orders the (group, candidate) pairs by sensitivity (then by cost saved),
  builds the Pareto list by lowering groups in that order, and searches it for the lowest-cost entry that
  meets ``FP32 - max_drop``, evaluating entries lazily (a parallel k-ary search: one probe per worker).
* ``fast``: the same Pareto-list search without phase 1's groups x candidates evaluations. Pairs are ranked
  by the quantization noise they add (NSR of the group's weights, weighted by the power of the inputs they
  multiply, and of its input activations, from one FP32 run on a few calibration samples:
  :func:`~sweeper.search.analyzer.quantization_noise`) per cost saved, each group walking down its lower
  convex hull; full evaluations then search that list (k-ary, one probe per worker and round, until the
  answer could get at most 2 % cheaper), optional repair rounds try further moves on the answer, and the
  uniform candidates cheaper than the answer are evaluated last unless a failing profile dominates them.
  About log(list length) rounds instead of groups x candidates evaluations; every answer is a full evaluation.
* ``optuna``: one categorical parameter per group; NSGA-II on (metric, cost) or TPE on cost with the
  accuracy threshold as a constraint; seeded with the greedy Pareto points; asynchronous ask/tell over the
  worker pool; budget by trials and/or time; resumable from its storage.

Greedy and Optuna evaluate every uniform candidate too, fast those cheaper than its answer, so the answer is
never costlier than the cheapest uniform candidate that passes (for fast: by the same monotony its list
search assumes, when a failing profile already gives every group at least that candidate's precision).

Modules: :mod:`.step` (the :class:`~sweeper.search.amp.step.AMPStep`, its answer and results document,
:func:`~sweeper.search.amp.step.run_amp`), one per search: :mod:`.greedy`, :mod:`.fast`, :mod:`.optuna_search`;
:mod:`.common` (the state the searches share, costs, the Pareto front, the uniform comparison) and
:mod:`.latency` (the measured latency of the answer and the latency check).
"""
