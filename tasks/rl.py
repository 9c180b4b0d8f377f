"""Prefect task of the RL stage, apart from tasks.training so that the pretrain and SFT stages, which import that
module, do not depend on the RL trainer's code (its gym pulls in the verifiers of every domain)."""

from __future__ import annotations

from k2core.rl import rl
from tasks import k2_task

reinforce = k2_task(rl, name="rl")
