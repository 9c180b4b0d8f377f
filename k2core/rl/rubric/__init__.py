"""K2's self-critique rubric reward (K2 section 3.2.2, appendix F): versioned rubrics, a pairwise critic judged in
both orders, prescriptive hard rules, Bradley-Terry or win-rate rewards, and the critic-verifier closed loop."""

from k2core.rl.rubric.closed_loop import (AgreementReport, Disagreement, VerifiedGroup, critic_verifier_agreement,
                                          preference_examples, preference_frame, write_preferences)
from k2core.rl.rubric.critic import Critic, Verdict, critic_messages, parse_verdict, verdict_text
from k2core.rl.rubric.prescriptive import DETECTORS, explicit_justification, opening_praise
from k2core.rl.rubric.ranking import GroupRanking, PairJudgement, detected_violations, judge_pair, rank_group
from k2core.rl.rubric.reward import RubricReward, rubric_reward
from k2core.rl.rubric.rubrics import (RUBRICS_DIR, Criterion, Rubric, RubricError, RubricSet, load_library,
                                      load_rubric, select_rubrics)
from k2core.rl.rubric.scores import (RubricRewardConfig, bradley_terry, bt_win_probabilities, rubric_rewards,
                                     win_rates)

__all__ = [
    "DETECTORS", "RUBRICS_DIR", "AgreementReport", "Critic", "Criterion", "Disagreement", "GroupRanking",
    "PairJudgement", "Rubric", "RubricError", "RubricReward", "RubricRewardConfig", "RubricSet", "Verdict",
    "VerifiedGroup", "bradley_terry", "bt_win_probabilities", "critic_messages", "critic_verifier_agreement",
    "detected_violations", "explicit_justification", "judge_pair", "load_library", "load_rubric", "opening_praise",
    "parse_verdict", "preference_examples", "preference_frame", "rank_group", "rubric_reward", "rubric_rewards",
    "select_rubrics", "verdict_text", "win_rates", "write_preferences",
]
