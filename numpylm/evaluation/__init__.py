"""Evaluation: how well a model predicts held-out text (nats, bits, perplexity, rolling bits per
byte), and how it scores on benchmark tasks by log-likelihood and by generation, with error
bars."""
from numpylm.evaluation.evaluate import (EvalReport, evaluate_ids, evaluate_text,
                                         evaluate_tokens, report_from_nll)
from numpylm.evaluation.generative import exact_match, extract_answer, generate_until, normalize
from numpylm.evaluation.harness import TaskResult, results_json, results_table, run_task
from numpylm.evaluation.loglikelihood import (ChoiceScore, encode_pair, multiple_choice_metrics,
                                              score_batched, score_from_scratch, score_shared)
from numpylm.evaluation.metrics import bits_per_byte, bits_per_char, bits_per_token, perplexity
from numpylm.evaluation.mmlu import find_mmlu_file, mmlu_dev, parse_cot_prompts
from numpylm.evaluation.rolling import (RollingReport, rolling_loglikelihood, rolling_report,
                                        rolling_windows)
from numpylm.evaluation.stats import PairedDifference, paired_bootstrap, stderr_of_mean
from numpylm.evaluation.tasks import Task, load_task, read_task_file

__all__ = ["ChoiceScore", "EvalReport", "PairedDifference", "RollingReport", "Task", "TaskResult",
           "bits_per_byte", "bits_per_char", "bits_per_token", "encode_pair", "evaluate_ids",
           "evaluate_text", "evaluate_tokens", "exact_match", "extract_answer", "find_mmlu_file",
           "generate_until", "load_task", "mmlu_dev", "multiple_choice_metrics", "normalize",
           "paired_bootstrap", "parse_cot_prompts", "perplexity", "read_task_file",
           "report_from_nll", "results_json", "results_table", "rolling_loglikelihood",
           "rolling_report", "rolling_windows", "run_task", "score_batched", "score_from_scratch",
           "score_shared", "stderr_of_mean"]
