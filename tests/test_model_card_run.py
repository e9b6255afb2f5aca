"""The model card of a trained model is filled from the run (data, steps, losses, eval results, a training example)
and survives `Trainer.create_model_card` (which `Trainer.push_to_hub` calls before uploading)."""

from __future__ import annotations

import json

from huggingface_hub import ModelCard
from test_train_cli import cli_args, pair_dir  # noqa: F401 (pair_dir: a fixture)
from test_training import SharerSeesSecret, make_model, secret_features, training_args

from c2c_hf.commands.train import main as train_main
from c2c_hf.hub import write_model_card
from c2c_hf.training import make_trainer

EXAMPLE = [{"role": "user", "content": "what is the secret"}, {"role": "assistant", "content": "s7"}]


def test_trainer_card_is_the_c2c_card_with_the_runs_facts(tmp_path):
    output = tmp_path / "run"
    args = training_args(output, max_steps=4, logging_steps=1, eval_strategy="steps", eval_steps=4, per_device_eval_batch_size=8)
    trainer = make_trainer(
        make_model(fuser_hidden_size=16), args, secret_features(32, 0), SharerSeesSecret(0),
        eval_dataset=secret_features(8, 1), dataset_name="org/secret-task", dataset_selection="split train[:32]",
        example_messages=EXAMPLE,
    )  # fmt: skip
    trainer.train()
    trainer.save_model(str(output))
    history = trainer.state.log_history
    last_loss = [entry["loss"] for entry in history if "loss" in entry][-1]
    eval_loss = [entry["eval_loss"] for entry in history if "eval_loss" in entry][-1]
    for step in ("saved", "created"):  # the save's card, then the one create_model_card writes over it
        if step == "created":
            trainer.create_model_card(license="apache-2.0", tags="my-tag")
        card = ModelCard.load(output / "README.md")
        text = card.text
        assert text.lstrip().startswith("# C2C fuser:") and "More information needed" not in text  # not the Trainer's
        assert "- Data: org/secret-task (split train[:32]), 32 training rows\n- Steps: 4\n" in text
        assert f"- final train loss: {last_loss}\n" in text and f"- eval loss: {eval_loss}\n" in text
        assert "- learning_rate: 0.003\n" in text and "- seed: 0\n" in text  # the Trainer's hyperparameters
        assert 'messages = [{"role": "user", "content": "what is the secret"}]\n' in text
        assert '# A conversation from the training data; the answer it was trained on: "s7"' in text
        (result,) = card.data.eval_results
        assert (result.metric_type, result.metric_value, result.dataset_name) == ("loss", eval_loss, "org/secret-task")
        assert card.data.datasets == ["org/secret-task"] and "c2c" in card.data.tags
    assert card.data.license == "apache-2.0" and "my-tag" in card.data.tags
    facts = json.loads((output / "training.json").read_text())
    assert facts["steps"] == 4 and facts["eval_metrics"] == {"loss": eval_loss} and facts["example"] == EXAMPLE


def test_train_command_card_names_the_data_and_asks_a_training_question(pair_dir, tmp_path):  # noqa: F811
    train_main(cli_args(pair_dir, tmp_path / "run", "--max_steps", "2", "--save_steps", "1", "--logging_steps", "1"))
    text = (tmp_path / "run" / "README.md").read_text()
    assert f"- Data: {pair_dir / 'data.jsonl'} (split train), 48 training rows\n- Steps: 2\n" in text
    assert 'messages = [{"role": "user", "content": "what is the color of paris"}]\n' in text
    assert '# A conversation from the training data; the answer it was trained on: "red"' in text
    checkpoint = (tmp_path / "run" / "checkpoint-1" / "README.md").read_text()
    assert "- Steps: 1\n" in checkpoint  # each checkpoint's card: the run up to it


def test_a_card_without_run_facts_keeps_the_generic_example_and_no_eval_results(tmp_path):
    card = write_model_card(make_model(fuser_hidden_size=16), tmp_path)
    assert 'messages = [{"role": "user", "content": "Which planet is known as the red planet?"}]\n' in card.text
    assert "the answer it was trained on" not in card.text and "- Data: unknown\n- Steps: unknown" in card.text
    assert card.data.eval_results is None and card.data.model_name is None


def test_a_trainer_save_writes_the_card_once_unless_it_must_name_the_hub_repo(tmp_path, monkeypatch):
    import c2c_hf.hub
    import c2c_hf.training

    writes = []

    def counting(model, folder, *args, **kwargs):
        writes.append(kwargs.get("repo_id"))
        return write_model_card(model, folder, *args, **kwargs)

    monkeypatch.setattr(c2c_hf.hub, "write_model_card", counting)  # the model's save_pretrained imports it from here
    monkeypatch.setattr(c2c_hf.training, "write_model_card", counting)
    output = tmp_path / "run"
    trainer = make_trainer(make_model(fuser_hidden_size=16), training_args(output, max_steps=1), secret_features(8, 0),
                           SharerSeesSecret(0), dataset_name="org/secret-task")  # fmt: skip
    trainer.train()
    writes.clear()
    trainer.save_model(str(output))
    assert writes == [str(output)]  # the model's own save, filled from training.json written just before it
    assert "- Data: org/secret-task" in (output / "README.md").read_text()
    trainer.hub_model_id = "org/c2c-secret"
    writes.clear()
    trainer.save_model(str(output))
    assert writes == [str(output), "org/c2c-secret"]
    assert 'from_pretrained("org/c2c-secret"' in (output / "README.md").read_text()
