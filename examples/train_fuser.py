"""Train a C2C fuser from Python: the library calls behind `c2c-hf train`, spelled out.

    python examples/train_fuser.py --receiver R --sharer S --dataset data.jsonl --output_dir out [TrainingArguments]

For every option (fuser size, layer map, LoRA, overflow handling...) use `c2c-hf train --help`.
"""

from __future__ import annotations

from dataclasses import dataclass

from transformers import AutoModelForCausalLM, AutoTokenizer, HfArgumentParser, TrainingArguments

from c2c_hf import C2CDataCollator, C2CForCausalLM, build_features, load_dataset_any, make_trainer


@dataclass
class Arguments:
    receiver: str
    sharer: str
    dataset: str
    fuser_hidden_size: int = 1024
    max_length: int = 1024


def main() -> None:
    args, training_args = HfArgumentParser((Arguments, TrainingArguments)).parse_args_into_dataclasses()
    receiver_tokenizer = AutoTokenizer.from_pretrained(args.receiver)
    sharer_tokenizer = AutoTokenizer.from_pretrained(args.sharer)
    model = C2CForCausalLM.from_base_models(
        AutoModelForCausalLM.from_pretrained(args.receiver),
        AutoModelForCausalLM.from_pretrained(args.sharer),
        receiver_tokenizer,  # with the sharer's tokenizer: a token map when the vocabularies differ
        sharer_tokenizer,
        fuser_hidden_size=args.fuser_hidden_size,
    )
    features, stats = build_features(load_dataset_any(args.dataset), receiver_tokenizer, max_length=args.max_length)
    print(stats)
    trainer = make_trainer(model, training_args, features, C2CDataCollator.for_tokenizer(receiver_tokenizer))
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    trainer.save_model()  # fuser weights + config: reload with AutoModelForCausalLM.from_pretrained(output_dir)
    receiver_tokenizer.save_pretrained(training_args.output_dir)


if __name__ == "__main__":
    main()
