"""The workflow's steps and how they run: one module per step (baseline, analyzer, litemp, amp/, adaround,
qat), the runner every step goes through (step: staging, study, MLflow parent run, progress; evaluate: the
shared evaluation path), the workflow's decision rules (workflow) and many models at once (batch)."""

from __future__ import annotations
