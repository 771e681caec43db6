"""`numpylm finetune`: bad settings are refused with a clear message before any model loads."""
import pytest

from numpylm.cli import main


@pytest.mark.parametrize("extra, words", [
    ([], "exactly one of --data"),
    (["--task", "chess"], "built-in tasks"),
    (["--task", "reverse", "--rank", "0"], "rank"),
    (["--task", "reverse", "--alpha", "-1"], "lora_alpha"),
    (["--method", "grpo", "--data", "pairs.jsonl"], "--method grpo learns from a task"),
    (["--method", "grpo", "--task", "addition", "--group-size", "1"], "--group-size must be"),
])
def test_bad_settings_fail_before_loading(tmp_path, capsys, extra, words):
    code = main(["finetune", "--model", str(tmp_path / "absent"), "--out", str(tmp_path / "o"),
                 *extra])
    assert code == 2
    assert words in capsys.readouterr().err


def test_finetune_is_listed(capsys):
    with pytest.raises(SystemExit) as info:
        main(["finetune", "--help"])
    assert info.value.code == 0 and "--method {sft,lora,qlora,dpo,grpo}" in capsys.readouterr().out
