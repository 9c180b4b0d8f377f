"""The self-critique rubric reward of one prompt's responses: critic ranking, then the scalar rule."""

from __future__ import annotations

from dataclasses import dataclass

from k2core.rl.rubric.critic import Critic
from k2core.rl.rubric.ranking import GroupRanking, rank_group
from k2core.rl.rubric.rubrics import RubricSet
from k2core.rl.rubric.scores import RubricRewardConfig, rubric_rewards


@dataclass(frozen=True)
class RubricReward:
    rewards: list[float]
    ranking: GroupRanking


def rubric_reward(critic: Critic, rubrics: RubricSet, prompt: str, responses: list[str],
                  config: RubricRewardConfig) -> RubricReward:
    """Rank the K responses pairwise (both orders, prescriptive rule) and turn the outcomes into rewards."""
    ranking = rank_group(critic, rubrics, prompt, responses)
    return RubricReward(rewards=rubric_rewards(ranking.wins, config), ranking=ranking)
